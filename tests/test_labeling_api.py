"""The web app's rules through Starlette's ASGI test client: sign-in, who sees what, cross-site
POSTs, body limits, every bad input a 4xx with a clear message (never a 500, never a partial
write), and text that is shown as text."""

import json
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")
from starlette.testclient import TestClient  # noqa: E402

from rlhf.app.server import MAX_BODY_BYTES, create_app  # noqa: E402
from rlhf.feedback.labeling import Item, LabelStore  # noqa: E402

EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)>'
STATIC = Path(__file__).resolve().parents[1] / "rlhf" / "app" / "static"


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


@pytest.fixture
def app_env(tmp_path):
    url = f"sqlite:///{tmp_path / 'labels.db'}"
    its = [Item(f"prompt {i} {EVIL}", [f"r{i}-a {EVIL}", f"r{i}-b", f"r{i}-c"], [True] * 3, i + 1) for i in range(4)]
    LabelStore.create(url, its, guidelines=f"Prefer honest answers. {EVIL}", reservation_seconds=60).close()
    app = create_app(url)
    store = app.state.store
    store.clock = Clock()
    tokens = {"alice": store.add_labeler("alice"), "bob": store.add_labeler("bob"), "admin": store.admin_token()}
    return app, store, tokens


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def client(app):
    return TestClient(app, base_url="http://testserver", raise_server_exceptions=True)


def test_private_link_sets_a_strict_httponly_cookie_and_a_bad_link_is_refused(app_env):
    app, _, tokens = app_env
    c = client(app)
    r = c.get(f"/l/{tokens['alice']}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/label"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower() and "rlhf_labeler=" in cookie
    assert c.get("/label").status_code == 200
    assert client(app).get("/l/not-a-token").status_code == 401
    assert client(app).get(f"/l/{tokens['admin']}").status_code == 401  # the admin token is not a labeler link
    assert client(app).get(f"/a/{tokens['alice']}").status_code == 401


def test_who_may_see_what(app_env):
    app, _, tokens = app_env
    c = client(app)
    r = c.get("/api/next")
    assert r.status_code == 401 and "not signed in" in r.json()["error"]
    assert c.get("/api/next", headers=bearer("forged")).json() == {"error": "unknown or revoked token: ask the admin "
                                                                            "for a new link"}
    assert c.get("/api/next", headers=bearer(tokens["admin"])).status_code == 403
    for path in ("/admin", "/api/admin/report", "/api/admin/export"):
        assert c.get(path).status_code == 401
        r = c.get(path, headers=bearer(tokens["alice"]))
        assert r.status_code == 403 and "admin token" in r.text
        assert c.get(path, headers=bearer(tokens["admin"])).status_code == 200


def test_a_labeler_sees_only_their_own_labels(app_env):
    app, _, tokens = app_env
    c = client(app)
    for name in ("alice", "bob"):
        item = c.get("/api/next", headers=bearer(tokens[name])).json()["item"]
        r = c.post("/api/labels", headers=bearer(tokens[name]), json={"item_id": item["item_id"], "ranking": [0, 1, 2]})
        assert r.status_code == 201 and r.json()["progress"]["labelled"] == 1
    mine = c.get("/api/me", headers=bearer(tokens["alice"])).json()
    assert mine["labeler"] == "alice" and len(mine["labels"]) == 1 and "labeler" not in mine["labels"][0]


def test_cross_site_posts_are_refused(app_env):
    app, store, tokens = app_env
    c = client(app)
    c.get(f"/l/{tokens['alice']}")
    item = c.get("/api/next").json()["item"]
    body = {"item_id": item["item_id"], "ranking": [0, 1, 2]}
    r = c.post("/api/labels", json=body)
    assert r.status_code == 403 and "needs an Origin or Referer header" in r.json()["error"]
    r = c.post("/api/labels", json=body, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and "cross-site POST refused" in r.json()["error"]
    r = c.post("/api/labels", content="item_id=1", headers={"Origin": "http://testserver",
                                                            "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415  # a cross-site form cannot send JSON
    assert store.dump()["labels"] == []
    assert c.post("/api/labels", json=body, headers={"Origin": "http://testserver"}).status_code == 201


def test_bodies_are_bounded_and_must_be_json(app_env):
    app, store, tokens = app_env
    c = client(app)
    h = bearer(tokens["alice"])
    item = c.get("/api/next", headers=h).json()["item"]
    huge = json.dumps({"item_id": item["item_id"], "kind": "skip", "reason": "x" * (MAX_BODY_BYTES + 1)})
    r = c.post("/api/labels", headers={**h, "Content-Type": "application/json"}, content=huge)
    assert r.status_code == 413 and "over 65536 bytes" in r.json()["error"]

    def chunks():  # no Content-Length: the limit is counted while reading
        yield huge.encode()
    r = c.post("/api/labels", headers={**h, "Content-Type": "application/json"}, content=chunks())
    assert r.status_code == 413
    r = c.post("/api/labels", headers={**h, "Content-Type": "application/json"}, content="{not json")
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    assert store.dump()["labels"] == []


@pytest.mark.parametrize("body", [None, [], "x", 3, {"item_id": 1e308}, {"item_id": None}, {"item_id": 1, "ranking": "abc"},
                                  {"item_id": 1, "ranking": [[0, 1, 2], "x"]}, {"item_id": 1, "ranking": [True, 0, 1]},
                                  {"item_id": 1, "kind": "skip", "reason": 5}, {"item_id": 10**30, "kind": "all_bad"},
                                  {"item_id": -1, "kind": "all_bad"}, {"item_id": 1, "strength": "huge", "ranking": [0, 1, 2]}])
def test_every_bad_body_is_a_4xx_with_a_message_and_writes_nothing(app_env, body):
    app, store, tokens = app_env
    c = client(app)
    h = bearer(tokens["alice"])
    c.get("/api/next", headers=h)
    r = c.post("/api/labels", headers=h, json=body)
    assert 400 <= r.status_code < 500 and r.json()["error"]
    assert store.dump()["labels"] == []


def test_unknown_item_duplicate_non_permutation_and_expired_reservation(app_env):
    app, store, tokens = app_env
    c = client(app)
    h = bearer(tokens["alice"])
    item = c.get("/api/next", headers=h).json()["item"]
    r = c.post("/api/labels", headers=h, json={"item_id": 4242, "kind": "all_bad"})
    assert r.status_code == 404 and r.json() == {"error": "unknown item 4242"}
    r = c.post("/api/labels", headers=h, json={"item_id": item["item_id"], "ranking": [0, 1, 1]})
    assert r.status_code == 400 and "expected a permutation of the 3 positions 0..2" in r.json()["error"]
    assert c.post("/api/labels", headers=h, json={"item_id": item["item_id"], "ranking": [0, 1, 2]}).status_code == 201
    r = c.post("/api/labels", headers=h, json={"item_id": item["item_id"], "ranking": [0, 1, 2]})
    assert r.status_code == 409 and "a label is stored once" in r.json()["error"]
    nxt = c.get("/api/next", headers=h).json()["item"]
    store.clock.t += 61  # past the 60 s reservation
    r = c.post("/api/labels", headers=h, json={"item_id": nxt["item_id"], "ranking": [0, 1, 2]})
    assert r.status_code == 409 and "expired" in r.json()["error"]
    assert len(store.dump()["labels"]) == 1


def test_text_is_shown_as_text(app_env):
    app, _, tokens = app_env
    c = client(app)
    page = c.get("/label", headers=bearer(tokens["alice"]))
    assert EVIL not in page.text and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page.text  # guidelines
    assert "script-src 'self'" in page.headers["content-security-policy"]  # no inline script could run anyway
    item = c.get("/api/next", headers=bearer(tokens["alice"])).json()["item"]
    assert EVIL in item["prompt"]  # the API gives the text as it is; the page sets it with textContent
    script = (STATIC / "label.js").read_text()
    assert "textContent" in script and "innerHTML" not in script.replace("never innerHTML", "")
    assert "insertAdjacentHTML" not in script and "document.write" not in script


def test_admin_page_shows_progress_agreement_weights_and_flags(app_env):
    app, store, tokens = app_env
    c = client(app)
    for name in ("alice", "bob"):
        for _ in range(2):
            item = c.get("/api/next", headers=bearer(tokens[name])).json()["item"]
            order = [0, 1, 2] if name == "alice" else [2, 1, 0]
            c.post("/api/labels", headers=bearer(tokens[name]), json={"item_id": item["item_id"], "ranking": order})
    report = c.get("/api/admin/report", headers=bearer(tokens["admin"])).json()
    assert report["progress"] == {"items": 4, "gold_items": 0, "complete": 2, "labels": 4, "labels_needed": 8}
    assert [row["labels"] for row in report["labelers"]] == [2, 2]
    page = client(app)
    page.get(f"/a/{tokens['admin']}")
    html = page.get("/admin").text
    assert "4 of 8 labels (2 of 4 items complete" in html and "Krippendorff" in html
    assert "counts agreement x gold x min(1, k / 20), so its first label counts\n  1/20, its 5th 5/20" in html
    r = c.post("/api/admin/labelers", headers=bearer(tokens["admin"]), json={"name": "carol"})
    assert r.status_code == 201 and r.json()["link"].startswith("http://testserver/l/")
    assert store.authenticate(r.json()["token"]).name == "carol"
    assert c.post("/api/admin/labelers", headers=bearer(tokens["alice"]), json={"name": "eve"}).status_code == 403


def test_serve_warns_when_not_bound_to_loopback(monkeypatch, tmp_path):
    import uvicorn

    from rlhf.cli import serve
    from rlhf.config.labeling import ServeConfig

    url = f"sqlite:///{tmp_path / 'labels.db'}"
    LabelStore.create(url, [Item("p", ["a", "b"], [True, True], 1)]).close()
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kw: calls.append((host, port)))
    serve.run(ServeConfig(db=url))
    assert calls == [("127.0.0.1", 8000)]
    with pytest.warns(UserWarning, match="serving on 0.0.0.0: anyone who can reach this machine"):
        serve.run(ServeConfig(db=url, host="0.0.0.0"))


def test_a_busy_database_is_a_503_not_a_500(app_env, monkeypatch):
    import sqlite3

    app, store, tokens = app_env

    def locked(*args):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(store, "next_item", locked)
    r = client(app).get("/api/next", headers=bearer(tokens["alice"]))
    assert r.status_code == 503 and "nothing was saved; retry" in r.json()["error"]
