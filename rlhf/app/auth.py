"""Who is asking, and whether a POST really comes from our own page.

How a token travels:
- a labeler opens the private link ``/l/<token>`` (``rlhf label add-labeler NAME`` prints it);
  the server checks the token and sets it in an HttpOnly, SameSite=Strict cookie
  (``rlhf_labeler``), then redirects to ``/label``. The admin's link ``/a/<token>``
  (``rlhf label admin-token``) sets ``rlhf_admin`` and leads to ``/admin``. One browser can hold
  both (a person who labels and administers).
- scripts (``rlhf label simulate``, tests) send ``Authorization: Bearer <token>`` instead.
Tokens are stored only as their SHA-256 (``LabelStore.authenticate``).

Cross-site requests: a POST authenticated by a cookie must carry an ``Origin`` (or, failing
that, ``Referer``) header of this very server, and every POST body must be JSON
(``Content-Type: application/json``), which a cross-site HTML form cannot send; the cookie is
SameSite=Strict on top. A POST with a Bearer header needs none of this: a browser never adds
that header by itself.
"""

from __future__ import annotations

from urllib.parse import urlparse

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from rlhf.feedback.labeling.store import Account

LABELER_COOKIE = "rlhf_labeler"
ADMIN_COOKIE = "rlhf_admin"
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _account(request: Request, cookie: str) -> Account:
    token = _bearer(request) or request.cookies.get(cookie)
    if not token:
        raise HTTPException(401, "not signed in: open your private link (/l/<token>, or /a/<token> for the admin) "
                                 "or send Authorization: Bearer <token>")
    account = request.app.state.store.authenticate(token)
    if account is None:
        raise HTTPException(401, "unknown or revoked token: ask the admin for a new link")
    return account


def require_labeler(request: Request) -> Account:
    """The labeler making the request (401 without a valid token, 403 for the admin's token)."""
    account = _account(request, LABELER_COOKIE)
    if account.is_admin:
        raise HTTPException(403, "the admin token cannot label: open a labeler's link")
    return account


def require_admin(request: Request) -> None:
    """Pass for the admin; 401 without a valid token, 403 for a labeler's token."""
    account = _account(request, ADMIN_COOKIE)
    if not account.is_admin:
        raise HTTPException(403, "this page needs the admin token (rlhf label admin-token)")


def csrf_problem(request: Request) -> str | None:
    """Why this request may be cross-site, or None when it is fine (module docstring)."""
    if request.method not in UNSAFE_METHODS or _bearer(request):
        return None
    if not (request.cookies.get(LABELER_COOKIE) or request.cookies.get(ADMIN_COOKIE)):
        return None  # no credentials: the handler answers 401 itself
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source or source == "null":
        return "a POST signed in by cookie needs an Origin or Referer header of this server"
    parsed = urlparse(source)
    if f"{parsed.scheme}://{parsed.netloc}" != f"{request.url.scheme}://{request.url.netloc}":
        return f"cross-site POST refused: origin {parsed.scheme}://{parsed.netloc} is not this server"
    return None


class CSRFMiddleware:
    """Refuses cross-site POSTs (403) before any handler runs."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            problem = csrf_problem(Request(scope))
            if problem:
                await JSONResponse({"error": problem}, status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def set_token_cookie(response, cookie: str, token: str, secure: bool) -> None:
    response.set_cookie(cookie, token, httponly=True, samesite="strict", secure=secure, path="/",
                        max_age=60 * 60 * 24 * 90)
