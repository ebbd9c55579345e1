"""The labeling page's own controls in a real headless browser (Debian's chromium through
Playwright, never `playwright install`): ties by keyboard, drag to rank, the K = 2 strength,
"all bad" and skip with a reason; each stored as the labeler meant it. (The labeler-and-admin
journey and the screenshots are tests/test_browser_e2e.py.) Skipped without chromium or
playwright unless RLHF_REQUIRE_BROWSER=1, as there."""

import os
from pathlib import Path

import pytest

from labeling_live import live_server

CHROMIUM = os.environ.get("RLHF_CHROMIUM", "/usr/bin/chromium")
try:
    import playwright.sync_api  # noqa: F401
    MISSING = None if Path(CHROMIUM).is_file() else f"no chromium at {CHROMIUM}"
except ImportError:
    MISSING = "playwright is not installed"
if MISSING and os.environ.get("RLHF_REQUIRE_BROWSER") == "1":
    raise RuntimeError(f"RLHF_REQUIRE_BROWSER=1 but {MISSING}")
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


def test_ties_drag_strength_all_bad_and_skip_in_the_browser(tmp_path):
    from playwright.sync_api import sync_playwright

    from rlhf.app.server import create_app
    from rlhf.feedback.labeling import Item, LabelStore

    url = f"sqlite:///{tmp_path / 'labels.db'}"
    items = [Item("three", ["r0", "r1", "r2"], [True] * 3, 1), Item("dragged", ["d0", "d1", "d2"], [True] * 3, 2),
             Item("two", ["t0", "t1"], [True, True], 3), Item("bad", ["b0", "b1"], [True, True], 4),
             Item("skipped", ["s0", "s1"], [True, True], 5)]
    store = LabelStore.create(url, items, overlap=1, gold_rate=0.0)
    token = store.add_labeler("ann")
    app = create_app(url)

    def shown(page):
        return [text.split(" ", 1)[1] for text in page.locator("#responses li").all_inner_texts()]

    def saved(page, n):
        page.wait_for_function(f"() => document.getElementById('progress').textContent.startsWith('{n} labelled')")

    with live_server(app) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(f"{base}/l/{token}")
        page.wait_for_selector("#item:not([hidden])")
        expected = {}
        # 1: third shown best, then the first and second tied: keys 3, 1, =, 2
        order = shown(page)
        for key in ("3", "1", "=", "2"):
            page.keyboard.press(key)
        assert page.inner_text("#ranking").splitlines() == ["response 3", "response 1 = response 2"]
        page.keyboard.press("Enter")
        expected["three"] = [[order[2]], sorted([order[0], order[1]])]
        saved(page, 1)
        # 2: drag the second shown response onto the ranking's empty margin (appends), then the third;
        # drop the first onto the entry of the second (inserts before it)
        order = shown(page)
        for pos in (1, 2):
            page.drag_and_drop(f"#responses li[data-pos='{pos}']", "#ranking", target_position={"x": 4, "y": 4})
        page.drag_and_drop("#responses li[data-pos='0']", "#ranking li[data-tier='0']")
        assert page.inner_text("#ranking").splitlines() == ["response 1", "response 2", "response 3"]
        page.click("#submit")
        expected["dragged"] = [[order[0]], [order[1]], [order[2]]]
        saved(page, 2)
        # 3: K = 2 with a strength
        order = shown(page)
        page.check("input[value='slightly_better']")
        page.keyboard.press("2")
        page.keyboard.press("Enter")
        expected["two"] = [[order[1]], [order[0]]]
        saved(page, 3)
        page.click("#all-bad")
        saved(page, 4)
        page.fill("#skip-reason", "I cannot judge <this>")
        page.click("#skip")
        page.wait_for_function("() => document.getElementById('saved').textContent.includes('skip')")
        page.wait_for_selector("#done", state="visible")
        browser.close()

    dump = store.dump()
    by_prompt = {dump["items"][lab["item_id"]]["prompt"]: lab for lab in dump["labels"]}
    for prompt, tiers in expected.items():
        responses = dump["items"][by_prompt[prompt]["item_id"]]["responses"]
        assert [sorted(responses[i] for i in tier) for tier in by_prompt[prompt]["tiers"]] == tiers, prompt
    assert by_prompt["two"]["strength"] == "slightly_better"
    assert by_prompt["bad"]["kind"] == "all_bad"
    assert by_prompt["skipped"]["kind"] == "skip" and by_prompt["skipped"]["reason"] == "I cannot judge <this>"
