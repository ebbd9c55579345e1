"""What a person does, in a real headless browser (Debian's chromium driven by Playwright; never
``playwright install``): a labeler opens their private link and ranks two items by keyboard, the
admin page then shows their progress; the dashboard draws curves that grow while a run trains.

A screenshot of each page is saved under pytest's tmp folder; with RLHF_SCREENSHOT_DIR set, the
labeling and admin pages are copied there too (docs/images/ for docs/labeling.md). Without chromium or playwright the tests skip
with the reason, unless RLHF_REQUIRE_BROWSER=1 (set by .ci/run, which installs both): then that
is a failure, so CI can never pass by skipping.
"""

import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from dashboard_fixtures import SCRIPT, make_runs

CHROMIUM = os.environ.get("RLHF_CHROMIUM", "/usr/bin/chromium")


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright; never `playwright install`)"
    if not Path(CHROMIUM).is_file():
        return f"no chromium at {CHROMIUM} (apt-get install chromium)"
    return None


MISSING = _browser_missing()
if MISSING and os.environ.get("RLHF_REQUIRE_BROWSER") == "1":
    raise RuntimeError(f"RLHF_REQUIRE_BROWSER=1 but {MISSING}")
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


def save_screenshot(page, tmp_path, name, docs=False):
    """The page as PNG in tmp_path, and (``docs``) in RLHF_SCREENSHOT_DIR when set. The
    dashboard's pictures in the docs show real runs: scripts/dashboard_screenshots.py."""
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    target = os.environ.get("RLHF_SCREENSHOT_DIR")
    if target and docs:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)
    return path


class LiveServer:
    """The app under uvicorn in a thread, on a free port of 127.0.0.1."""

    def __init__(self, app):
        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # --no-sandbox: CI runs as root in a container, where chromium's sandbox cannot start
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def project(tmp_path):
    """A labeling project of three items (K = 2) whose responses hold HTML, a labeler, the admin,
    and the fake runs folder for the dashboard."""
    from rlhf.app.server import create_app
    from rlhf.feedback.labeling.items import Item
    from rlhf.feedback.labeling.store import LabelStore

    url = f"sqlite:///{tmp_path / 'labels.db'}"
    items = [Item(f"Question {i}: is <b>{i}</b> even?", [f"Yes <i>{i}</i>", f"No {SCRIPT} {i}"], [True, True], i + 1)
             for i in range(3)]
    store = LabelStore.create(url, items, overlap=1)
    tokens = {"admin": store.admin_token(), "ann": store.add_labeler("ann")}
    runs = make_runs(tmp_path / "runs", time.time())
    app = create_app(url, runs_dir=runs)
    return {"app": app, "tokens": tokens, "store": store, "runs": runs}


def test_labeler_ranks_two_items_by_keyboard_and_admin_sees_progress(browser, project, tmp_path):
    tokens, store = project["tokens"], project["store"]
    alerts = []
    with LiveServer(project["app"]) as base:
        labeler = browser.new_context()
        page = labeler.new_page()
        page.on("dialog", lambda dialog: (alerts.append(dialog.message), dialog.dismiss()))
        page.goto(f"{base}/l/{tokens['ann']}")
        assert page.url == f"{base}/label"  # the private link set the cookie and led to the queue
        page.wait_for_selector("#item:not([hidden])")
        shown = []
        for n, keys in enumerate((["2", "1"], ["1", "2", "Backspace", "Backspace", "2"])):
            prompt = page.inner_text("#prompt")
            responses = page.locator("#responses li").all_inner_texts()
            assert len(responses) == 2 and "<b>" in prompt  # HTML shows as characters
            if n == 0:
                save_screenshot(page, tmp_path, "labeling", docs=True)
            for key in keys:  # item 1: 2 then 1; item 2: 1, 2, undo twice, 2 (1 is left and comes last)
                page.keyboard.press(key)
            shown.append((prompt, [r.split(" ", 1)[1] for r in responses]))
            page.keyboard.press("Enter")
            page.wait_for_function("n => document.getElementById('saved').textContent.includes('Saved')"
                                   " && document.getElementById('progress').textContent.startsWith(n + ' labelled')",
                                   arg=str(n + 1))
        assert alerts == []  # no script in a prompt or a response ran
        # the store holds both rankings, best first as pressed: shown response 2 above shown response 1
        account = store.authenticate(tokens["ann"])
        labels = store.my_labels(account)
        assert [label["kind"] for label in labels] == ["ranking", "ranking"]
        items = store.dump()["items"]
        for label, (prompt, texts) in zip(labels, shown):
            item = items[label["item_id"]]
            assert item["prompt"] == prompt
            best, worst = (item["responses"][tier[0]] for tier in label["tiers"])
            assert (best.strip(), worst.strip()) == (texts[1].strip(), texts[0].strip())

        admin = browser.new_context()
        page = admin.new_page()
        page.goto(f"{base}/a/{tokens['admin']}")
        assert page.url == f"{base}/admin"
        row = page.locator('#labelers tr[data-labeler="ann"] td')
        assert row.nth(0).inner_text() == "ann" and row.nth(1).inner_text() == "2"  # ann's two labels
        assert page.inner_text("#progress").startswith("2 of 3 labels")
        save_screenshot(page, tmp_path, "admin", docs=True)
        labeler.close()
        admin.close()


def test_dashboard_curves_grow_while_a_run_trains(browser, project, tmp_path):
    tokens, runs = project["tokens"], project["runs"]
    with LiveServer(project["app"]) as base:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error"
                and not msg.text.startswith("Failed to load resource") else None)  # those: the response below
        page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400
                and not r.url.endswith("/favicon.ico") else None)
        page.goto(f"{base}/a/{tokens['admin']}")
        page.goto(f"{base}/dashboard/")
        assert page.locator("#runs tbody tr").count() == 5
        save_screenshot(page, tmp_path, "dashboard_runs")

        page.goto(f"{base}/dashboard/run/ppo_live")
        page.wait_for_function("() => document.getElementById('charts').dataset.records === '3'")
        groups = page.eval_on_selector_all("#charts .dash-chart", "els => els.map(e => e.dataset.group)")
        assert groups == ["reward", "KL", "beta", "gold", "length", "losses"]
        assert page.locator("#charts canvas").count() == 6  # uPlot drew each chart
        # the run writes two more lines: the page's next polls draw them, no reload
        with open(runs / "ppo_live" / "metrics.jsonl", "a") as f:
            f.write('res": 0.4}\n' + json.dumps({"step": 5, "objective/scores": 0.5, "objective/kl": 0.05}) + "\n")
        page.wait_for_function("() => document.getElementById('charts').dataset.records === '5'", timeout=15_000)
        assert page.inner_text("#samples").count("<script>") == 1  # the sample's script is text
        save_screenshot(page, tmp_path, "dashboard_run")

        page.goto(f"{base}/dashboard/run/exp/demo")
        assert page.inner_text("#demo-table").count("0.646 ± 0.020") == 1
        assert page.eval_on_selector("#reward-hacking", "img => img.naturalWidth") == 1  # the PNG loaded
        page.click("#compare-link")
        page.select_option("#prompt", "1")  # picking a prompt reloads the view for it
        page.wait_for_url("**/compare/exp/demo?prompt=1")
        columns = page.eval_on_selector_all(".compare-col", "els => els.map(e => e.dataset.policy)")
        assert columns == ["base", "sft", "ppo", "dpo", "ppo (beta=0)"]
        save_screenshot(page, tmp_path, "dashboard_compare")
        assert errors == []  # no script error, nothing refused by the content security policy
        context.close()
