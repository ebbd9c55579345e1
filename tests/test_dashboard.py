"""The dashboard of runs, through the ASGI test client on a fake runs folder: admin only, curves
equal to metrics.jsonl (also while it grows), states from the files, escaping, the compare view."""

import json
import math
import time

import pytest
from starlette.testclient import TestClient

from dashboard_fixtures import PNG, SCRIPT, make_runs
from rlhf.app.dashboard_runs import chart_groups, compare_prompts, find_runs, read_metrics, resolve_run

NOW = 2_000_000_000.0  # a fixed "now" for the run states; files get mtimes relative to it


@pytest.fixture
def runs(tmp_path):
    return make_runs(tmp_path / "runs", NOW)


def test_chart_groups_put_each_metric_in_the_first_matching_chart():
    keys = ["step", "objective/kl", "objective/kl_coef", "gold/score", "eval/gold", "loss/policy", "eval/loss",
            "response/length", "objective/scores", "train/grad_norm", "time/elapsed_s"]
    assert chart_groups(keys) == {"reward": ["objective/scores"], "KL": ["objective/kl"], "beta": ["objective/kl_coef"],
                                  "gold": ["gold/score", "eval/gold"], "length": ["response/length"],
                                  "losses": ["loss/policy", "eval/loss"], "other": ["train/grad_norm", "time/elapsed_s"]}


def test_read_metrics_leaves_a_line_being_written_and_continues_after_n(runs):
    path = runs / "ppo_live" / "metrics.jsonl"
    records, next_line = read_metrics(path)
    assert [r["step"] for r in records] == [1, 2, 3] and next_line == 3
    with open(path, "a") as f:
        f.write('res": 0.4}\n')  # the writer finishes line 4
    records, next_line = read_metrics(path, after=3)
    assert records == [{"step": 4, "objective/scores": 0.4}] and next_line == 4
    sft, _ = read_metrics(runs / "sft" / "metrics.jsonl")
    assert sft[2]["loss/sft"] is None  # NaN: JSON has none; null draws a gap


def test_runs_are_found_with_stage_and_state(runs):
    found = {run.id: run for run in find_runs(runs, now=NOW, stale_after_s=300)}
    assert sorted(found) == ["dead", "exp/demo", "exp/demo/sft", "ppo_live", "sft"]
    assert {k: (r.stage, r.state) for k, r in found.items()} == {
        "sft": ("sft", "finished"), "ppo_live": ("ppo", "running"), "dead": ("dpo", "failed"),
        "exp/demo": ("demo", "finished"), "exp/demo/sft": ("sft", "finished")}
    assert found["ppo_live"].steps == 3 and found["sft"].steps == 50
    assert list(found)[0] == "ppo_live"  # newest first


def test_resolve_run_refuses_paths_out_of_the_runs_folder(runs, tmp_path):
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "metrics.jsonl").write_text("{}\n")
    assert resolve_run(runs, "exp/demo") == (runs / "exp" / "demo").resolve()
    for bad in ("../secret", "sft/../../secret", "/etc", "exp", "exp/demo/data", "nope"):
        assert resolve_run(runs, bad) is None, bad


@pytest.fixture
def app(runs, tmp_path):
    """H5's app with the dashboard mounted, an admin token and a labeler's token."""
    from rlhf.app.server import create_app
    from rlhf.feedback.labeling.items import Item
    from rlhf.feedback.labeling.store import LabelStore

    url = f"sqlite:///{tmp_path / 'labels.db'}"
    store = LabelStore.create(url, [Item("p", ["a", "b"], [True, True], 1)])
    tokens = {"admin": store.admin_token(), "labeler": store.add_labeler("ann")}
    store.close()
    client = TestClient(create_app(url, runs_dir=runs))
    return client, tokens


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


URLS = ["/dashboard/", "/dashboard/api/runs", "/dashboard/run/sft", "/dashboard/api/metrics/sft",
        "/dashboard/api/samples/ppo_live", "/dashboard/plot/exp/demo", "/dashboard/compare/exp/demo",
        "/dashboard/api/compare/exp/demo"]


@pytest.mark.parametrize("url", URLS)
def test_every_dashboard_url_needs_the_admin_token(app, url):
    client, tokens = app
    assert client.get(url).status_code == 401
    assert client.get(url, headers=bearer(tokens["labeler"])).status_code == 403
    assert client.get(url, headers=bearer("not-a-token")).status_code == 401
    assert client.get(url, headers=bearer(tokens["admin"])).status_code == 200


def test_runs_list_page_and_json(app):
    client, tokens = app
    body = client.get("/dashboard/api/runs", headers=bearer(tokens["admin"])).json()
    assert {r["id"]: r["stage"] for r in body["runs"]} == {"sft": "sft", "ppo_live": "ppo", "dead": "dpo",
                                                           "exp/demo": "demo", "exp/demo/sft": "sft"}
    page = client.get("/dashboard/", headers=bearer(tokens["admin"])).text
    assert 'href="/dashboard/run/exp/demo"' in page and "badge-finished" in page
    assert "http://" not in page.replace("http://testserver", "") and "https://" not in page  # no CDN


def test_curves_json_equals_the_metrics_file_and_polls_new_lines(app, runs):
    client, tokens = app
    lines = [json.loads(line) for line in (runs / "sft" / "metrics.jsonl").read_text().splitlines()]
    body = client.get("/dashboard/api/metrics/sft", headers=bearer(tokens["admin"])).json()
    expected = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in lines]
    assert body["records"] == expected and body["next"] == 3 and body["state"] == "finished"
    assert body["groups"]["losses"] == ["eval/loss", "loss/sft"]
    # a live run: only complete lines, then only the new one after ?after=next
    live = client.get("/dashboard/api/metrics/ppo_live", headers=bearer(tokens["admin"])).json()
    assert [r["objective/kl"] for r in live["records"]] == [0.01, 0.02, 0.03] and live["next"] == 3
    assert live["groups"]["beta"] == ["objective/kl_coef"] and live["groups"]["gold"] == ["gold/score"]
    with open(runs / "ppo_live" / "metrics.jsonl", "a") as f:
        f.write('res": 0.4}\n' + json.dumps({"step": 5, "objective/scores": 0.5}) + "\n")
    more = client.get("/dashboard/api/metrics/ppo_live?after=3", headers=bearer(tokens["admin"])).json()
    assert [r["step"] for r in more["records"]] == [4, 5] and more["next"] == 5
    assert client.get("/dashboard/api/metrics/sft?after=x", headers=bearer(tokens["admin"])).status_code == 400


def test_run_page_escapes_response_text(app):
    client, tokens = app
    page = client.get("/dashboard/run/ppo_live", headers=bearer(tokens["admin"])).text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page and SCRIPT not in page
    assert 'data-metrics-url="/dashboard/api/metrics/ppo_live"' in page
    assert 'src="/static/uplot/uPlot.iife.min.js"' in page


def test_demo_page_shows_its_table_plot_stages_and_compare_link(app):
    client, tokens = app
    page = client.get("/dashboard/run/exp/demo", headers=bearer(tokens["admin"])).text
    assert "0.646 ± 0.020" in page and "+0.136 ± 0.016" in page and "0.678 ± 0.018" in page
    assert 'src="/dashboard/plot/exp/demo"' in page and 'href="/dashboard/compare/exp/demo"' in page
    assert 'href="/dashboard/run/exp/demo/sft"' in page
    plot = client.get("/dashboard/plot/exp/demo", headers=bearer(tokens["admin"]))
    assert plot.content == PNG and plot.headers["content-type"] == "image/png"
    assert client.get("/dashboard/plot/sft", headers=bearer(tokens["admin"])).status_code == 404


def test_compare_view_puts_base_sft_ppo_dpo_side_by_side_with_scores(app, runs):
    client, tokens = app
    body = client.get("/dashboard/api/compare/exp/demo?prompt=1", headers=bearer(tokens["admin"])).json()
    assert body["prompts"] == ["Is a pear a fruit?", "Say <b>hi</b>"] and body["prompt"] == "Say <b>hi</b>"
    assert [c["policy"] for c in body["columns"]] == ["base", "sft", "ppo", "dpo", "ppo (beta=0)"]
    assert body["columns"][2]["responses"] == [{"response": f"ppo says {SCRIPT}", "score": pytest.approx(0.6),
                                                "gold": 0.7}]
    page = client.get("/dashboard/compare/exp/demo?prompt=1", headers=bearer(tokens["admin"])).text
    assert SCRIPT not in page and "Say <b>hi</b>" not in page and "Say &lt;b&gt;hi&lt;/b&gt;" in page
    assert "RM 0.600" in page and "gold 0.700" in page
    for bad, status in (("?prompt=2", 404), ("?prompt=-1", 404), ("?prompt=one", 400)):
        assert client.get("/dashboard/api/compare/exp/demo" + bad, headers=bearer(tokens["admin"])).status_code == status
    assert client.get("/dashboard/compare/sft", headers=bearer(tokens["admin"])).status_code == 404
    prompts, _ = compare_prompts(runs / "exp" / "demo" / "demo_samples.jsonl")
    assert len(prompts) == 2


def test_unknown_or_escaping_run_is_404(app):
    client, tokens = app
    for url in ("/dashboard/run/nope", "/dashboard/api/metrics/..%2F..%2Fetc", "/dashboard/run/exp/demo/data"):
        assert client.get(url, headers=bearer(tokens["admin"])).status_code == 404, url


def test_a_running_run_turns_failed_when_its_files_stop_changing(runs):
    assert {r.id: r.state for r in find_runs(runs, now=NOW + 400, stale_after_s=300)}["ppo_live"] == "failed"
    assert {r.id: r.state for r in find_runs(runs, now=time.time(), stale_after_s=1e12)}["dead"] == "running"


def test_the_demo_writes_the_samples_the_compare_view_reads(tmp_path):
    from rlhf.pipeline.demo_report import write_samples

    samples = {"sft": [{"prompt": "p1", "response": " a", "ended": True, "score": 0.5, "gold": 1.0, "length": 2},
                       {"prompt": "p2", "response": " b", "ended": True, "score": -0.5, "gold": 0.0, "length": 2}],
               "ppo": [{"prompt": "p1", "response": " c", "ended": False, "score": 1.5, "gold": 0.25, "length": 9}]}
    prompts, by_prompt = compare_prompts(write_samples(tmp_path / "demo_samples.jsonl", samples))
    assert prompts == ["p1", "p2"]
    assert by_prompt["p1"] == {"sft": [{"response": " a", "score": 0.5, "gold": 1.0}],
                               "ppo": [{"response": " c", "score": 1.5, "gold": 0.25}]}
    assert by_prompt["p2"] == {"sft": [{"response": " b", "score": -0.5, "gold": 0.0}]}


def test_a_relative_runs_folder_works(app, runs, tmp_path, monkeypatch):
    from rlhf.app.server import create_app

    client, tokens = app
    monkeypatch.chdir(runs.parent)
    relative = TestClient(create_app(f"sqlite:///{tmp_path / 'labels.db'}", runs_dir="runs"))
    assert relative.get("/dashboard/run/exp/demo", headers=bearer(tokens["admin"])).status_code == 200
    body = relative.get("/dashboard/api/runs", headers=bearer(tokens["admin"])).json()
    assert "exp/demo" in {r["id"] for r in body["runs"]}
