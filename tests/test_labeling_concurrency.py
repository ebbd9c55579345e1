"""20 labelers label 200 items with overlap 2 against a live server on SQLite: exactly 400
labels, none lost or duplicated, overlap respected (PostgreSQL: test_labeling_postgres.py)."""

import time

import pytest

pytest.importorskip("uvicorn")

from labeling_live import check_exactly_overlap_labels, label_concurrently, live_server  # noqa: E402
from rlhf.app.server import create_app  # noqa: E402
from rlhf.feedback.labeling import Item, LabelStore  # noqa: E402

N_ITEMS, OVERLAP, N_LABELERS = 200, 2, 20


def project_items(n: int) -> list[Item]:
    return [Item(f"prompt {i}", [f"a{i}", f"b{i}"], [True, True], i + 1) for i in range(n)]


def run_concurrency(url: str) -> float:
    LabelStore.create(url, project_items(N_ITEMS), overlap=OVERLAP, gold_rate=0.0).close()
    app = create_app(url)
    store = app.state.store
    tokens = {f"labeler{i:02d}": store.add_labeler(f"labeler{i:02d}") for i in range(N_LABELERS)}
    start = time.perf_counter()
    with live_server(app) as base:
        results = label_concurrently(base, tokens)
    seconds = time.perf_counter() - start
    check_exactly_overlap_labels(store, N_ITEMS, OVERLAP, results)
    assert sum(r["labels"] > 0 for r in results.values()) >= N_LABELERS // 2  # the work was really shared
    store.close()
    return seconds


def test_twenty_labelers_two_hundred_items_overlap_two_on_sqlite(tmp_path):
    seconds = run_concurrency(f"sqlite:///{tmp_path / 'labels.db'}")
    print(f"sqlite: {N_ITEMS * OVERLAP} labels by {N_LABELERS} concurrent labelers in {seconds:.1f} s")


def test_a_killed_server_loses_no_confirmed_label(tmp_path):
    """`rlhf serve` in its own process, three labels confirmed, then SIGKILL: all three are there."""
    import os
    import signal
    import subprocess
    import sys

    from labeling_live import free_port
    from rlhf.cli.labeling.simulate import call

    url = f"sqlite:///{tmp_path / 'labels.db'}"
    store = LabelStore.create(url, project_items(5), overlap=1, gold_rate=0.0)
    token = store.add_labeler("alice")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "rlhf", "serve", "--db", url, "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                if call(f"{base}/healthz", token, timeout=2)[0] == 200:
                    break
            except Exception:  # noqa: BLE001 - not up yet
                pass
            assert time.time() < deadline and server.poll() is None, server.stdout.read().decode()[-2000:]
            time.sleep(0.2)
        for _ in range(3):
            item = call(f"{base}/api/next", token)[1]["item"]
            assert call(f"{base}/api/labels", token, {"item_id": item["item_id"], "ranking": [1, 0]})[0] == 201
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    assert len(LabelStore(url).dump()["labels"]) == 3
