"""Feedback from AI end to end: the HTTP judge against a scripted local server (timeouts,
retries, garbage, the API key), ``rlhf ai label`` (resumable, its rankings train ``rlhf rm``),
``rlhf ai revise`` and ``rlhf ai fetch-smollm2``; a slow check with the real SmolLM2 judge."""

import json
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rlhf.cli.main import main
from rlhf.feedback.constitution import load_constitution
from rlhf.feedback.judge_http import HTTPJudge, JudgeRequestError
from rlhf.feedback.judges import Query

PRINCIPLE = load_constitution().principles[0]
SECRET = "sk-test-SECRET-4b1d"


def reply(content, logprobs=None):
    choice = {"message": {"role": "assistant", "content": content}}
    if logprobs is not None:
        choice["logprobs"] = {"content": [{"token": content, "logprob": 0.0,
                                           "top_logprobs": [{"token": t, "logprob": lp} for t, lp in logprobs]}]}
    return {"choices": [choice]}


def prefer_good(body):
    """The server's own judgment: the response with more "good"s, read from the question text."""
    text = body["messages"][-1]["content"]
    a = re.search(r"Response A:\n(.*?)\n\nResponse B:", text, re.S).group(1)
    b = re.search(r"Response B:\n(.*?)\n\nAnswer with", text, re.S).group(1)
    return reply("A" if a.count("good") >= b.count("good") else "B")


class ScriptedServer:
    """A local chat-completions endpoint. ``script`` is a list of actions taken by successive
    requests (then ``default``): "timeout" (sleep past the client's timeout), "500", "garbage"
    (200 with a body that is not JSON), "nonsense" (an answer naming neither label), or a
    callable body -> JSON reply. Records each request's Authorization header and the most
    requests in flight at once."""

    def __init__(self, script=(), default=prefer_good, delay=0.0):
        self.script, self.default, self.delay = list(script), default, delay
        self.lock = threading.Lock()
        self.requests, self.auth, self.in_flight, self.max_in_flight = 0, [], 0, 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests += 1
                    server.auth.append(self.headers.get("Authorization"))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    action = server.script.pop(0) if server.script else server.default
                try:
                    time.sleep(server.delay)
                    if action == "timeout":
                        time.sleep(1.0)
                        return
                    if action == "500":
                        self.send_response(500)
                        self.end_headers()
                        return
                    payload = (b"<html>oops" if action == "garbage" else
                               json.dumps(reply("I would rather not say.") if action == "nonsense"
                                          else action(body)).encode())
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with server.lock:
                        server.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server_factory():
    servers = []

    def make(*args, **kwargs):
        servers.append(ScriptedServer(*args, **kwargs))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


QUERY = Query(PRINCIPLE, "what is one plus two?", "three, good", "four")


def test_http_judge_retries_a_timeout_and_a_500_then_reads_the_log_probs(server_factory):
    server = server_factory(["timeout", "500", lambda body: reply("A", [("A", -0.2), ("B", -1.8)])])
    judge = HTTPJudge(server.url, "m", api_key_env="", timeout=0.3, max_retries=2, backoff=0.01, concurrency=1)
    # softmax over -0.2 and -1.8: 1 / (1 + e^-1.6) = 0.832018
    assert judge.judge([QUERY]) == [pytest.approx(0.832018, abs=1e-6)]
    assert server.requests == 3 and judge.requests == 3


def test_http_judge_gives_up_after_its_retries_with_a_clear_error(server_factory):
    server = server_factory(default="500")
    judge = HTTPJudge(server.url, "m", api_key_env="", max_retries=1, backoff=0.01)
    with pytest.raises(JudgeRequestError, match=r"HTTP 500 after 2 attempts; answers so far are in the cache"):
        judge.judge([QUERY])
    assert server.requests == 2


def test_unreadable_answers_are_counted_not_fatal(server_factory):
    server = server_factory(["garbage", "nonsense"], default=lambda body: reply("B"))
    judge = HTTPJudge(server.url, "m", api_key_env="", concurrency=1)
    assert judge.judge([QUERY, QUERY, QUERY]) == [None, None, 0.0]  # parsed from the text: no log-probs
    assert judge.unreadable == 2


def test_http_judge_keeps_to_its_concurrency_limit(server_factory):
    server = server_factory(delay=0.3)  # long enough that two requests overlap even on a loaded machine
    judge = HTTPJudge(server.url, "m", api_key_env="", concurrency=2)
    assert judge.judge([QUERY] * 8) == [1.0] * 8
    assert server.max_in_flight == 2


def cot_reply(body):
    """A reasoned answer whose first token leans to A but whose final "Answer: B" token, with
    its own log-probs, leans to B; the question must have asked for the final line."""
    assert body["messages"][-1]["content"].endswith('end with a final line "Answer: A" or "Answer: B".')
    assert body["max_tokens"] == 64 and body["logprobs"] is True
    tokens = [("A", [("A", -0.1), ("B", -3.0)]), (" is long", []), (".\n", []), ("Answer", []), (":", []),
              (" B", [("B", -0.2), ("A", -1.8)])]
    choice = {"message": {"role": "assistant", "content": "".join(t for t, _ in tokens)},
              "logprobs": {"content": [{"token": t, "logprob": 0.0,
                                        "top_logprobs": [{"token": x, "logprob": lp} for x, lp in top]}
                                       for t, top in tokens]}}
    return {"choices": [choice]}


def test_http_chain_of_thought_reads_the_final_answer_token(server_factory):
    server = server_factory([cot_reply, lambda body: reply("A is long.\nAnswer: B"), lambda body: reply("A, surely.")])
    judge = HTTPJudge(server.url, "m", api_key_env="", concurrency=1, cot_max_new_tokens=64)
    # 1: the final " B" token's log-probs, not the first token's: 1 / (1 + e^(-0.2 - -1.8)) = 1 / (1 + e^1.6) = 0.167982
    # 2: no log-probs: the final line's letter, B -> 0.0; 3: no "Answer:" line: unreadable, counted
    assert judge.judge([QUERY] * 3) == [pytest.approx(0.167982, abs=1e-6), 0.0, None]
    assert judge.unreadable == 1
    assert judge.cache_id == "m+cot64" and HTTPJudge(server.url, "m", api_key_env="").cache_id == "m"


def test_final_answer_preference_by_hand():
    from rlhf.feedback.judge_http import final_answer_preference

    assert final_answer_preference("Answer: A is wrong, so\nAnswer: (B)") == 0.0  # the last one counts
    assert final_answer_preference("**Answer:** A") == 1.0
    assert final_answer_preference("A is better") is None
    # the final letter's token has no A/B log-probs listed: its text decides
    tokens = [{"token": "Answer: ", "top_logprobs": []}, {"token": "A", "top_logprobs": []}]
    assert final_answer_preference("Answer: A", tokens) == 1.0


def write_candidates(path, n=12):
    records = [{"prompt": f"\n\nHuman: say something nice number {i}\n\nAssistant:",
                "responses": [f" bad {i}", f" good good {i}", f" good {i}"]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_ai_label_over_http_never_writes_the_key_and_a_rerun_makes_no_call(server_factory, tmp_path, monkeypatch,
                                                                            capsys):
    server = server_factory()
    monkeypatch.setenv("MY_JUDGE_KEY", SECRET)
    candidates = write_candidates(tmp_path / "candidates.jsonl")
    out = tmp_path / "run" / "rankings.jsonl"
    argv = ["ai", "label", "--candidates", str(candidates), "--judge", server.url, "--judge_model", "judge-1",
            "--judge_api_key_env", "MY_JUDGE_KEY", "--output_file", str(out), "--disable_tqdm", "true"]
    assert main(argv) == 0
    assert server.requests == 12 * 3 * 2  # 3 pairs per prompt, both orders
    assert set(server.auth) == {f"Bearer {SECRET}"}  # the key went to the endpoint...
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 12 and all(r["ranking"] == [1, 2, 0] and r["labeler"] == "ai:judge-1" for r in records)
    summary = json.loads((out.parent / "rankings.summary.json").read_text())
    assert summary["position_bias"] == 0.0 and summary["judge_calls"] == 72
    out.unlink()
    assert main(argv) == 0  # the same command again: every answer from the cache
    assert server.requests == 72
    assert json.loads((out.parent / "rankings.summary.json").read_text())["cache_hits"] == 72
    captured = capsys.readouterr()
    written = "".join(p.read_text() for p in (tmp_path / "run").iterdir())
    assert SECRET not in written + captured.out + captured.err  # ...and nowhere else


def test_ai_label_with_chain_of_thought_reasons_and_keys_its_cache_apart(server_factory, tmp_path):
    def reasoned(body):  # the server reasons, then ends with the verdict prefer_good gives
        text = body["messages"][-1]["content"]
        if not text.endswith('"Answer: B".'):
            return prefer_good(body)
        a = re.search(r"Response A:\n(.*?)\n\nResponse B:", text, re.S).group(1)
        b = re.search(r"Response B:\n(.*?)\n\nFirst explain", text, re.S).group(1)
        return reply(f"Counting goods.\nAnswer: {'A' if a.count('good') >= b.count('good') else 'B'}")

    server = server_factory(default=reasoned)
    candidates = write_candidates(tmp_path / "candidates.jsonl", n=4)
    out = tmp_path / "rankings.jsonl"
    argv = ["ai", "label", "--candidates", str(candidates), "--judge", server.url, "--judge_model", "m",
            "--output_file", str(out), "--disable_tqdm", "true", "--overwrite_output_dir", "true"]
    assert main(argv + ["--judge_chain_of_thought", "true", "--judge_cot_max_new_tokens", "32"]) == 0
    assert server.requests == 24
    assert [json.loads(line)["ranking"] for line in out.read_text().splitlines()] == [[1, 2, 0]] * 4
    assert main(argv) == 0  # without chain-of-thought: the same cache file, but none of its answers
    assert server.requests == 48


def test_ai_label_resumes_after_a_failure_from_the_cache(server_factory, tmp_path):
    # 40 good answers, then the endpoint dies: the run stops with the answers it had cached
    server = server_factory(default="500")
    server.script = [prefer_good] * 40
    candidates = write_candidates(tmp_path / "candidates.jsonl")
    out = tmp_path / "rankings.jsonl"
    argv = ["ai", "label", "--candidates", str(candidates), "--judge", server.url, "--judge_model", "m",
            "--judge_max_retries", "0", "--judge_concurrency", "1", "--chunk_size", "4", "--output_file", str(out),
            "--disable_tqdm", "true"]
    assert main(argv) == 1 and not out.exists()
    server.default = prefer_good
    before = server.requests
    assert main(argv) == 0
    # the first two chunks (4 prompts x 6 queries = 24 each) were cached; only the rest is asked
    assert server.requests - before == 72 - 24
    assert len(out.read_text().splitlines()) == 12


def test_rankings_from_a_judge_load_and_train_rlhf_rm(server_factory, tmp_path, tiny_model_dir):
    from rlhf.data.formats import load_rankings

    server = server_factory()
    out = tmp_path / "rankings.jsonl"
    assert main(["ai", "label", "--candidates", str(write_candidates(tmp_path / "c.jsonl", n=16)), "--judge",
                 server.url, "--judge_model", "m", "--output_file", str(out), "--disable_tqdm", "true"]) == 0
    rankings = load_rankings(out)
    assert len(rankings) == 16 and rankings[0].labeler == "ai:m"
    assert main(["rm", "--model_name_or_path", str(tiny_model_dir), "--train_file", str(out), "--output_dir",
                 str(tmp_path / "rm"), "--max_steps", "2", "--per_device_train_batch_size", "4", "--report_to", "none",
                 "--disable_tqdm", "true"]) == 0
    assert (tmp_path / "rm" / "model" / "model.safetensors").is_file()


def test_ai_label_with_gold_on_the_embedded_task(tmp_path):
    candidates = tmp_path / "c.jsonl"
    candidates.write_text(json.dumps({"prompt": "\n\nHuman: What is 2 plus 3?\n\nAssistant:",
                                      "responses": [" 6.", " 5.", " 5. I hope this helps."]}) + "\n")
    out = tmp_path / "r.jsonl"
    assert main(["ai", "label", "--candidates", str(candidates), "--judge", "gold", "--output_file", str(out)]) == 0
    assert json.loads(out.read_text())["ranking"] == [1, 2, 0] and json.loads(out.read_text())["labeler"] == "gold"
    people = tmp_path / "p.jsonl"
    assert main(["ai", "label", "--candidates", str(candidates), "--judge", "simulated", "--output_file", str(people)]) == 0
    record = json.loads(people.read_text())
    assert record["labeler"] in {"alice", "bob", "carol", "dave", "erin"} and record["ranking"][-1] == 0  # " 6." last


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    bad = tmp_path / "c.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "responses": ["a", "b"]}) + "\n" + json.dumps({"prompt": "p"}) + "\n")
    assert main(["ai", "label", "--candidates", str(bad), "--judge", "gold", "--output_file",
                 str(tmp_path / "r.jsonl")]) == 1
    assert f"{bad}, line 2, field 'responses': expected a list of at least 2 strings" in capsys.readouterr().err
    assert main(["ai", "label", "--candidates", str(bad), "--judge", "http://x", "--output_file", "r"]) == 1
    assert "--judge_model is required" in capsys.readouterr().err
    assert main(["ai", "label", "--candidates", str(bad), "--judge", "http://x", "--judge_model", "m",
                 "--judge_api_key_env", "sk-abc-123"]) == 1
    assert "takes the NAME of an environment variable" in capsys.readouterr().err
    assert main(["ai", "fetch-smollm2", "--output_dir", str(tmp_path / "s"), "--gguf_file", str(tmp_path / "no.gguf")]) == 1
    assert f"no GGUF file at {tmp_path / 'no.gguf'}" in capsys.readouterr().err


def test_ai_revise_writes_demonstrations_and_comparisons(tmp_path, tiny_model_dir, toy_data):
    from rlhf.data.formats import load_comparisons, load_demonstrations

    out = tmp_path / "revise"
    assert main(["ai", "revise", "--model_name_or_path", str(tiny_model_dir), "--prompts_file", str(toy_data["prompts"]),
                 "--judge", str(tiny_model_dir), "--output_dir", str(out), "--max_prompts", "4",
                 "--max_new_tokens", "6", "--critique_max_new_tokens", "6", "--revision_max_new_tokens", "6"]) == 0
    steps = [json.loads(line) for line in (out / "critiques.jsonl").read_text().splitlines()]
    assert len(steps) == 4 and all(s["principle"] in {p.name for p in load_constitution().principles} for s in steps)
    demos = load_demonstrations(out / "demonstrations.jsonl")
    assert [d.completion for d in demos] == [s["revision"] for s in steps if s["revision"].strip()]
    if (out / "comparisons.jsonl").read_text():
        pairs = load_comparisons(out / "comparisons.jsonl")
        assert all(p.chosen != p.rejected for p in pairs)
    assert "judge_api_key_env" in (out / "config.yaml").read_text()


SMOLLM2 = Path(os.environ.get("RLHF_SMOLLM2_DIR", Path.home() / ".cache" / "rlhf" / "smollm2-135m-instruct"))


@pytest.mark.slow
def test_smollm2_judge_runs_and_reports_its_position_bias(tmp_path):
    """The real judge (rlhf ai fetch-smollm2 first): it answers, and its bias is measured."""
    if not (SMOLLM2 / "config.json").is_file():
        assert main(["ai", "fetch-smollm2", "--output_dir", str(SMOLLM2)]) == 0
    candidates = tmp_path / "c.jsonl"
    candidates.write_text("".join(json.dumps({"prompt": f"\n\nHuman: What is {a} plus {b}?\n\nAssistant:",
                                              "responses": [f" {a + b}.", f" {a * b + 7}."]}) + "\n"
                                  for a, b in [(2, 3), (4, 4), (1, 6), (3, 5)]))
    out = tmp_path / "r.jsonl"
    assert main(["ai", "label", "--candidates", str(candidates), "--judge", str(SMOLLM2), "--output_file", str(out),
                 "--keep_position_flips", "true"]) == 0
    summary = json.loads((tmp_path / "r.summary.json").read_text())
    assert summary["pairs"] == 4 and summary["unreadable"] == 0 and 0.0 <= summary["position_bias"] <= 1.0


def test_demo_feedback_ai_reranks_with_the_judge(tmp_path, tiny_model_dir):
    from rlhf.config.base import ConfigError
    from rlhf.pipeline.demo import DemoConfig, rank_with_ai

    with pytest.raises(ConfigError, match="feedback must be people or ai"):
        DemoConfig(feedback="robots").validate()
    config = DemoConfig(feedback="ai", judge=str(tiny_model_dir), keep_position_flips=True, disable_tqdm=True)
    records = [{"prompt": "\n\nHuman: what is one plus two?\n\nAssistant:", "responses": [" three", " four", " no"],
                "ranking": [0, 1, 2], "labeler": "alice"}] * 2
    ranked = rank_with_ai(config, records, tmp_path / "judge_cache.jsonl")
    assert ranked and all(r["labeler"] == f"ai:{tiny_model_dir.name}" and sorted(r["ranking"]) == [0, 1, 2]
                          for r in ranked)
    assert json.loads((tmp_path / "judge_summary.json").read_text())["pairs"] == 6
    with pytest.raises(ConfigError, match=r"gave no labels: its verdict changed with the order .* on 6 of 6 pairs"):
        rank_with_ai(DemoConfig(feedback="ai", judge=str(tiny_model_dir)), records, tmp_path / "c2.jsonl")
    with pytest.raises(ConfigError, match="run `rlhf ai fetch-smollm2` first"):
        rank_with_ai(DemoConfig(feedback="ai", judge=str(tmp_path / "none")), records, tmp_path / "c.jsonl")
