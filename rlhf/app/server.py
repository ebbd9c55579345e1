"""The web app: labeling pages, the admin page and (with ``runs_dir``) the dashboard of runs.

``create_app(db_url)`` builds a Starlette app around one ``LabelStore``. Pages are rendered on
the server (Jinja2, autoescaped) and use the same JSON API (``/api/...``) as scripts and tests.
Every error is JSON ``{"error": message}`` with a 4xx status for what a client can fix; a bug
is the only 500. ``rlhf serve`` runs it under uvicorn.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from rlhf.app.auth import CSRFMiddleware
from rlhf.feedback.labeling.db import StoreError
from rlhf.feedback.labeling.store import LabelingError, LabelStore

APP_DIR = Path(__file__).resolve().parent
MAX_BODY_BYTES = 64 * 1024  # a label is a few hundred bytes
templates = Jinja2Templates(directory=str(APP_DIR / "templates"))  # autoescape on for .html
# No inline script or style, nothing from elsewhere: a response that slipped past escaping could not run.
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                                           "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
                "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}


async def read_json(request: Request) -> object:
    """The request's JSON body: 415 unless it says JSON, 413 beyond MAX_BODY_BYTES (counted
    while reading, so a lying or missing Content-Length does not help), 400 unless it parses."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise HTTPException(415, "send the body as JSON (Content-Type: application/json)")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise HTTPException(413, f"request body over {MAX_BODY_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise HTTPException(413, f"request body over {MAX_BODY_BYTES} bytes")
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise HTTPException(400, f"body is not valid JSON: {err}") from err


def render(request: Request, name: str, context: dict, status_code: int = 200) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=status_code, headers=PAGE_HEADERS)


async def _http_error(request: Request, exc: HTTPException):
    if "/api/" in request.url.path or "application/json" in request.headers.get("accept", ""):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)
    return render(request, "error.html", {"status": exc.status_code, "message": exc.detail}, exc.status_code)


async def _labeling_error(request: Request, exc: LabelingError):
    return JSONResponse({"error": exc.message}, status_code=exc.status)


async def _database_busy(request: Request, exc: Exception):
    """The database could not be reached or stayed locked past its timeout: the request wrote
    nothing (its transaction rolled back) and may be retried."""
    return JSONResponse({"error": f"the database is busy or unreachable, nothing was saved; retry ({exc})"},
                        status_code=503, headers={"Retry-After": "1"})


def _database_errors() -> dict:
    errors = {sqlite3.OperationalError: _database_busy, StoreError: _database_busy}
    try:
        import psycopg

        errors[psycopg.OperationalError] = _database_busy
    except ImportError:
        pass
    return errors


def create_app(db_url: str, runs_dir: str | Path | None = None) -> Starlette:
    """The app for the labeling project at ``db_url``; ``runs_dir`` adds the dashboard of runs."""
    from rlhf.app.admin import admin_routes
    from rlhf.app.labeling import labeling_routes

    store = LabelStore(db_url)
    routes = [*labeling_routes(), *admin_routes()]
    if runs_dir is not None:
        from rlhf.app.dashboard import dashboard_routes

        routes.append(Mount("/dashboard", routes=dashboard_routes(Path(runs_dir))))
    routes.append(Mount("/static", StaticFiles(directory=str(APP_DIR / "static")), name="static"))
    app = Starlette(routes=routes, middleware=[Middleware(CSRFMiddleware)],
                    exception_handlers={HTTPException: _http_error, LabelingError: _labeling_error,
                                        **_database_errors()})
    app.state.store = store
    app.state.runs_dir = None if runs_dir is None else Path(runs_dir)
    return app
