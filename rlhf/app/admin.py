"""The admin's side: progress, agreement, gold accuracy and weights; adding labelers."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from rlhf.app.auth import require_admin
from rlhf.app.server import read_json, render
from rlhf.feedback.labeling.report import export_records, labeler_weights_option, quality_report


def _report(store) -> dict:
    return quality_report(store.dump())


async def admin_page(request: Request):
    await run_in_threadpool(require_admin, request)
    report = await run_in_threadpool(_report, request.app.state.store)
    names = [row["name"] for row in report["labelers"]]
    cells = {(c["a"], c["b"]): c for c in report["kappa"]}
    cells.update({(b, a): c for (a, b), c in list(cells.items())})
    return render(request, "admin.html", {"report": report, "names": names, "cells": cells,
                                          "weights_option": labeler_weights_option(report)})


async def api_report(request: Request):
    await run_in_threadpool(require_admin, request)
    return JSONResponse(await run_in_threadpool(_report, request.app.state.store))


async def api_add_labeler(request: Request):
    """``{"name"}`` -> the new labeler's token and private link (shown once)."""
    await run_in_threadpool(require_admin, request)
    payload = await read_json(request)
    if not isinstance(payload, dict) or set(payload) != {"name"}:
        raise HTTPException(400, 'expected {"name": "..."}')
    token = await run_in_threadpool(request.app.state.store.add_labeler, payload["name"])
    return JSONResponse({"name": payload["name"], "token": token, "link": f"{request.base_url}l/{token}"},
                        status_code=201)


async def api_export(request: Request):
    """The export's records as JSON (``rlhf label export`` writes the same to a file)."""
    await run_in_threadpool(require_admin, request)
    raw = request.query_params.get("min_weight", "0")
    try:
        min_weight = float(raw)
    except ValueError:
        raise HTTPException(400, f"min_weight: expected a number, got {raw!r}") from None
    store = request.app.state.store
    dump = await run_in_threadpool(store.dump)
    report = quality_report(dump)
    records, counts = export_records(dump, report, min_weight)
    return JSONResponse({"records": records, "counts": counts,
                         "labeler_weights": labeler_weights_option(report, min_weight)})


def admin_routes() -> list[Route]:
    return [Route("/admin", admin_page), Route("/api/admin/report", api_report),
            Route("/api/admin/labelers", api_add_labeler, methods=["POST"]),
            Route("/api/admin/export", api_export)]
