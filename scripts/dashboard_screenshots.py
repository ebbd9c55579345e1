#!/usr/bin/env python
"""Screenshots of the dashboard on real runs, for docs/dashboard.md.

    python scripts/dashboard_screenshots.py --runs runs --demo demo --out docs/images

Serves ``--runs`` (an empty labeling project beside it, for the admin token) and saves, with
Debian's chromium driven by Playwright: the runs list, the demo's page (table and
reward-hacking plot), its PPO stage's curves and the compare view. The labeling and admin
pages are saved by tests/test_browser_e2e.py with RLHF_SCREENSHOT_DIR set.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", required=True, help="the runs folder to serve")
    parser.add_argument("--demo", default="demo", help="the demo's run id (its path under --runs)")
    parser.add_argument("--compare_prompt", type=int, default=1)
    parser.add_argument("--out", default="docs/images")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    from rlhf.app.server import create_app
    from rlhf.feedback.labeling.items import Item
    from rlhf.feedback.labeling.store import LabelStore
    from test_browser_e2e import LiveServer

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'labels.db'}"
        store = LabelStore.create(url, [Item("p", ["a", "b"], [True, True], 1)])
        token = store.admin_token()
        store.close()
        with LiveServer(create_app(url, runs_dir=args.runs)) as base, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{base}/a/{token}")
            shots = {"dashboard_runs": "/dashboard/", "dashboard_demo": f"/dashboard/run/{args.demo}",
                     "dashboard_ppo": f"/dashboard/run/{args.demo}/ppo",
                     "dashboard_compare": f"/dashboard/compare/{args.demo}?prompt={args.compare_prompt}"}
            for name, path in shots.items():
                page.goto(base + path)
                page.wait_for_load_state("networkidle")
                page.screenshot(path=str(out / f"{name}.png"), full_page=True)
                print(out / f"{name}.png")
            browser.close()


if __name__ == "__main__":
    main()
