"""A live uvicorn server in a thread and N labelers hammering it over HTTP, shared by the SQLite
and PostgreSQL concurrency tests."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

from rlhf.cli.labeling.simulate import call


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(app):
    """Serve ``app`` on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def label_concurrently(base: str, tokens: dict[str, str]) -> dict[str, dict]:
    """Every labeler, in its own thread, takes items until its queue is empty and ranks each one
    in the order shown. Returns per labeler {"labels", "errors"} (errors: any non-2xx answer)."""
    results: dict[str, dict] = {}

    def work(name: str, token: str) -> None:
        counts = {"labels": 0, "errors": []}
        while True:
            status, data = call(f"{base}/api/next", token)
            if status != 200:
                counts["errors"].append((status, data))
                break
            if data["item"] is None:
                break
            item = data["item"]
            status, data = call(f"{base}/api/labels", token, {"item_id": item["item_id"],
                                                              "ranking": list(range(item["k"]))})
            if status == 201:
                counts["labels"] += 1
            else:
                counts["errors"].append((status, data))
                if len(counts["errors"]) >= 5:  # a broken store must fail the test, not loop forever
                    break
        results[name] = counts

    threads = [threading.Thread(target=work, args=item) for item in tokens.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def check_exactly_overlap_labels(store, n_items: int, overlap: int, results: dict[str, dict]) -> None:
    """The invariants of the concurrency test, checked on what the database holds."""
    dump = store.dump()
    labels = dump["labels"]
    assert all(not r["errors"] for r in results.values()), {n: r["errors"][:2] for n, r in results.items()}
    assert len(labels) == n_items * overlap  # none lost ...
    assert sum(r["labels"] for r in results.values()) == n_items * overlap  # ... every confirmed one stored
    pairs = [(lab["labeler"], lab["item_id"]) for lab in labels]
    assert len(set(pairs)) == len(pairs)  # none duplicated, no labeler saw an item twice
    per_item = {}
    for lab in labels:
        per_item[lab["item_id"]] = per_item.get(lab["item_id"], 0) + 1
    assert sorted(per_item) == list(range(1, n_items + 1))
    assert set(per_item.values()) == {overlap}  # overlap respected on every item
    assert all(item["label_count"] == overlap for item in dump["items"].values())
