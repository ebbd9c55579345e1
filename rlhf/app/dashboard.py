"""The dashboard (the seed's "interactive playground"): the runs under a folder, their live
curves, samples, the demo's table and reward-hacking plot, and a side-by-side compare view.

Mounted by ``rlhf.app.server.create_app`` at ``/dashboard`` when ``rlhf serve --runs DIR`` is
given. Everything reads the files the stages write (``rlhf.app.dashboard_runs``); the pages
poll the same JSON endpoints that tests and scripts use. Admin only: every handler starts with
``require_admin`` (a run's samples and config can be private). The chart library (uPlot) is
vendored under ``static/uplot``: no CDN, works offline.
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import quote

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import BaseRoute, Route

from rlhf.app.auth import require_admin
from rlhf.app.dashboard_runs import (DEMO_PLOT, DEMO_RESULTS, DEMO_SAMPLES, METRICS_FILE, SAMPLES_FILE,
                                     chart_groups, compare_prompts, demo_table_rows, describe_run, find_runs,
                                     finite_or_none, read_json, read_jsonl_tail, read_metrics, resolve_run)
from rlhf.app.server import render

SAMPLES_SHOWN = 20  # the newest samples.jsonl lines on a run's page
POLL_MS = 2000  # how often a page asks for new metrics while its run is running
# The compare view's column order; other policies of the demo (ideal SFT, best-of-n, beta=0) follow.
COMPARE_ORDER = ("base", "sft", "ppo", "dpo")


def dashboard_routes(runs_dir: Path, stale_after_s: float = 300.0) -> list[BaseRoute]:
    """The dashboard's pages and JSON API over the runs under ``runs_dir``; a run with no file
    changed for ``stale_after_s`` seconds and no summary is shown as failed. The handlers are
    plain functions: Starlette runs them in its thread pool, so reading files never stalls the
    labeling API that shares the server."""
    runs_dir = Path(runs_dir).resolve()  # run ids are paths relative to it, whatever the cwd

    def run_folder(request: Request) -> Path:
        require_admin(request)
        folder = resolve_run(runs_dir, request.path_params["run_id"])
        if folder is None:
            raise HTTPException(404, f"no run {request.path_params['run_id']!r} under the runs folder")
        return folder

    def links(request: Request) -> dict:
        prefix = request.scope.get("root_path", "")
        return {"prefix": prefix, "static": prefix.rsplit("/dashboard", 1)[0] + "/static"}

    def index(request: Request):
        require_admin(request)
        runs = find_runs(runs_dir, stale_after_s=stale_after_s)
        return render(request, "dashboard.html", {
            "runs": runs, "runs_dir": str(runs_dir), "quote": quote, **links(request)})

    def api_runs(request: Request):
        require_admin(request)
        return JSONResponse({"runs": [run.as_json() for run in find_runs(runs_dir, stale_after_s=stale_after_s)]})

    def run_page(request: Request):
        folder = run_folder(request)
        run = describe_run(runs_dir, folder, now=time.time(), stale_after_s=stale_after_s)
        sub_runs = [r for r in find_runs(folder, stale_after_s=stale_after_s) if r.id]  # a demo's stages
        results = read_json(folder / DEMO_RESULTS) if run.is_demo else None
        context = {"run": run, "run_path": quote(run.id), "samples": read_jsonl_tail(folder / SAMPLES_FILE, SAMPLES_SHOWN),
                   "sub_runs": sub_runs, "table": demo_table_rows(results) if results else [],
                   "results": results, "has_plot": (folder / DEMO_PLOT).is_file(),
                   "has_compare": (folder / DEMO_SAMPLES).is_file(), "has_metrics": (folder / METRICS_FILE).is_file(),
                   "poll_ms": POLL_MS, "quote": quote, **links(request)}
        return render(request, "dashboard_run.html", context)

    def api_metrics(request: Request):
        """``{"records", "next", "groups", "state"}``: the metrics lines from ``?after=N`` on; a page
        polls with ``after`` = the last ``next`` and appends what comes back."""
        folder = run_folder(request)
        try:
            after = max(0, int(request.query_params.get("after", "0")))
        except ValueError:
            raise HTTPException(400, "after must be a whole number of lines") from None
        records, next_line = read_metrics(folder / METRICS_FILE, after)
        keys = sorted({k for r in records for k in r if isinstance(r[k], (int, float)) or r[k] is None})
        state = describe_run(runs_dir, folder, now=time.time(), stale_after_s=stale_after_s).state
        return JSONResponse({"records": records, "next": next_line, "groups": chart_groups(keys), "state": state})

    def api_samples(request: Request):
        folder = run_folder(request)
        samples = [{k: finite_or_none(v) for k, v in s.items()} for s in read_jsonl_tail(folder / SAMPLES_FILE, SAMPLES_SHOWN)]
        return JSONResponse({"samples": samples})

    def plot(request: Request):
        folder = run_folder(request)
        if not (folder / DEMO_PLOT).is_file():
            raise HTTPException(404, f"run {request.path_params['run_id']!r} has no {DEMO_PLOT}")
        return FileResponse(folder / DEMO_PLOT, media_type="image/png")

    def api_compare(request: Request):
        folder = run_folder(request)
        return JSONResponse(_compare(folder, request))

    def compare_page(request: Request):
        folder = run_folder(request)
        context = {"run_id": request.path_params["run_id"], "run_path": quote(request.path_params["run_id"]),
                   **_compare(folder, request), **links(request)}
        return render(request, "dashboard_compare.html", context)

    return [
        Route("/", index, name="dashboard"),
        Route("/api/runs", api_runs),
        Route("/api/metrics/{run_id:path}", api_metrics),
        Route("/api/samples/{run_id:path}", api_samples),
        Route("/api/compare/{run_id:path}", api_compare),
        Route("/run/{run_id:path}", run_page),
        Route("/plot/{run_id:path}", plot),
        Route("/compare/{run_id:path}", compare_page),
    ]


def _compare(folder: Path, request: Request) -> dict:
    """The held-out prompts of a demo and, for ``?prompt=i``, every policy's responses to prompt
    i with their reward-model and gold scores, base / SFT / PPO / DPO first."""
    samples_file = folder / DEMO_SAMPLES
    if not samples_file.is_file():
        raise HTTPException(404, f"no {DEMO_SAMPLES} in this run: the compare view needs a demo run by a version "
                            "of `rlhf demo` that writes its held-out samples")
    prompts, by_prompt = compare_prompts(samples_file)
    try:
        index = int(request.query_params.get("prompt", "0"))
    except ValueError:
        raise HTTPException(400, "prompt must be the number of a held-out prompt") from None
    if not 0 <= index < len(prompts):
        raise HTTPException(404, f"prompt must be between 0 and {len(prompts) - 1}, got {index}")
    policies = by_prompt[prompts[index]]
    order = [p for p in COMPARE_ORDER if p in policies] + [p for p in policies if p not in COMPARE_ORDER]
    return {"prompts": prompts, "index": index, "prompt": prompts[index],
            "columns": [{"policy": name, "responses": policies[name]} for name in order]}
