"""The labeler's side: the private link, the labeling page, and its JSON API."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Route

from rlhf.app.auth import ADMIN_COOKIE, LABELER_COOKIE, require_labeler, set_token_cookie
from rlhf.app.server import read_json, render


async def index(request: Request):
    if request.cookies.get(LABELER_COOKIE):
        return RedirectResponse("/label", status_code=303)
    return render(request, "index.html", {})


async def sign_in(request: Request):
    """``/l/<token>`` (labeler) or ``/a/<token>`` (admin): check the token, keep it in a cookie."""
    admin = request.url.path.startswith("/a/")
    token = request.path_params["token"]
    account = await run_in_threadpool(request.app.state.store.authenticate, token)
    if account is None or account.is_admin != admin:
        raise HTTPException(401, "this link is not valid (any more): ask the admin for a new one")
    response = RedirectResponse("/admin" if admin else "/label", status_code=303)
    set_token_cookie(response, ADMIN_COOKIE if admin else LABELER_COOKIE, token, request.url.scheme == "https")
    return response


async def label_page(request: Request):
    account = await run_in_threadpool(require_labeler, request)
    store = request.app.state.store
    return render(request, "label.html", {"name": account.name, "guidelines": store.settings["guidelines"]})


async def api_next(request: Request):
    """The labeler's current item (shown order) and progress; ``item`` is null when done."""
    store = request.app.state.store
    account = await run_in_threadpool(require_labeler, request)
    item = await run_in_threadpool(store.next_item, account)
    progress = await run_in_threadpool(store.progress, account)
    return JSONResponse({"labeler": account.name, "item": item, "progress": progress})


async def api_submit(request: Request):
    """One label: ``{"item_id", "kind": "ranking"|"all_bad"|"skip", "ranking"?, "strength"?, "reason"?}``."""
    store = request.app.state.store
    account = await run_in_threadpool(require_labeler, request)
    payload = await read_json(request)
    return JSONResponse(await run_in_threadpool(store.submit, account, payload), status_code=201)


async def api_me(request: Request):
    """The labeler's own progress and labels (never anyone else's)."""
    store = request.app.state.store
    account = await run_in_threadpool(require_labeler, request)
    return JSONResponse({"labeler": account.name, "progress": await run_in_threadpool(store.progress, account),
                         "labels": await run_in_threadpool(store.my_labels, account)})


async def healthz(request: Request):
    return JSONResponse({"ok": True})


def labeling_routes() -> list[Route]:
    return [Route("/", index), Route("/l/{token}", sign_in), Route("/a/{token}", sign_in),
            Route("/label", label_page), Route("/api/next", api_next),
            Route("/api/labels", api_submit, methods=["POST"]), Route("/api/me", api_me),
            Route("/healthz", healthz)]
