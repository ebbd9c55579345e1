"""`rlhf iterate` on a tiny model: two rounds write their folders and the table; a kill between
rounds and a kill inside a round's PPO resume to the same table and the same weights."""

import json
import signal
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlhf.config.base import ConfigError, parse_config
from rlhf.config.iterate import IterateConfig
from rlhf.errors import UserError
from rlhf.pipeline import iterate

TINY = {"rm": {"max_steps": 4, "per_device_train_batch_size": 4, "save_steps": 2, "eval_fraction": 0.25,
               "stats_max_pairs": 50},
        "ppo": {"max_steps": 2, "rollout_batch_size": 8, "per_device_train_batch_size": 8, "ppo_epochs": 1,
                "save_steps": 1}}


@pytest.fixture(scope="module")
def embedded_prompts(tmp_path_factory):
    from rlhf.embedded.task import format_prompt, instructions

    root = tmp_path_factory.mktemp("iterate_prompts")
    for name, split, count in (("train", "train", 24), ("test", "test", 6)):
        rows = [{"prompt": format_prompt(i.text)} for i in instructions(split)[:count]]
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def config_for(model, prompts, out, *extra):
    return parse_config(IterateConfig, [
        "--model_name_or_path", str(model), "--prompts_file", str(prompts / "train.jsonl"), "--eval_prompts_file",
        str(prompts / "test.jsonl"), "--output_dir", str(out), "--prompts_per_round", "8", "--samples_per_prompt",
        "3", "--max_new_tokens", "8", "--eval_samples_per_prompt", "2", "--gold_reward_function",
        "rlhf.embedded.gold:gold_rewards", "--disable_tqdm", "true", "--rm", json.dumps(TINY["rm"]), "--ppo",
        json.dumps(TINY["ppo"]), *map(str, extra)])


def run_quietly(config):
    """The run on one thread: a 2-layer model gains nothing from a second, and on a busy machine
    two threads waiting on each other made a round ten times slower (measured: tests/test_overopt_user.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return iterate.run(config)
    finally:
        torch.set_num_threads(threads)


def weights(out, round_):
    return load_file(str(Path(out) / f"round_{round_}" / "policy" / "model" / "model.safetensors"))


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].equal(b[name]), name


@pytest.fixture(scope="module")
def straight_run(tiny_demo_model_dir, embedded_prompts, tmp_path_factory):
    out = tmp_path_factory.mktemp("iterate_straight")
    return out, run_quietly(config_for(tiny_demo_model_dir, embedded_prompts, out, "--rounds", "2"))


def test_two_rounds_write_their_folders_and_the_table(straight_run):
    out, results = straight_run
    assert [r["round"] for r in results["rounds"]] == [1, 2]
    for r in (1, 2):
        rd = out / f"round_{r}"
        samples = [json.loads(line) for line in (rd / "samples.jsonl").read_text().splitlines()]
        labels = [json.loads(line) for line in (rd / "labels.jsonl").read_text().splitlines()]
        assert len(samples) == len(labels) > 0 and all(2 <= len(s["responses"]) <= 3 for s in samples)
        assert sorted(labels[0]["ranking"]) == list(range(len(labels[0]["responses"])))
        assert (rd / "rm" / "model").is_dir() and (rd / "policy" / "model").is_dir()
    # fresh prompts each round; the reward model of round 2 learns both rounds' labels
    first = {json.loads(line)["prompt"] for line in (out / "round_1" / "samples.jsonl").read_text().splitlines()}
    second = {json.loads(line)["prompt"] for line in (out / "round_2" / "samples.jsonl").read_text().splitlines()}
    assert not first & second
    assert results["rounds"][1]["labels_so_far"] == sum(
        len((out / f"round_{r}" / "labels.jsonl").read_text().splitlines()) for r in (1, 2))
    # round 2 starts from round 1's policy, and its "before" is round 1's "after" (same prompts, same stream)
    ppo2 = json.loads((out / "round_2" / "policy" / "summary.json").read_text())
    assert Path(ppo2["model"]).parent.parent.name == "round_2"
    cfg2 = (out / "round_2" / "policy" / "config.yaml").read_text()
    assert str(out / "round_1" / "policy" / "model") in cfg2
    assert results["rounds"][1]["before"]["gold"] == pytest.approx(results["rounds"][0]["after"]["gold"])
    for row in results["rounds"]:
        for side in ("before", "after"):
            pairs, rate = row[side]["rm_gold_pairs"], row[side]["rm_gold_agreement"]
            assert (0 <= rate <= 1) if pairs else rate is None
    table = (out / "iterate_table.md").read_text()
    assert table.splitlines()[2].startswith("| 0 (start) |") and table.splitlines()[4].startswith("| 2 |")


def test_a_finished_run_is_refused_without_resume(straight_run, tiny_demo_model_dir, embedded_prompts):
    out, _ = straight_run
    with pytest.raises(ConfigError, match="already holds an iterate run: pass --resume"):
        iterate.run(config_for(tiny_demo_model_dir, embedded_prompts, out, "--rounds", "2"))


def test_kill_between_rounds_resumes_to_the_same_result(straight_run, tiny_demo_model_dir, embedded_prompts, tmp_path):
    """Stopped after round 1 (its eval.json written), resumed for 2 rounds: the same table and weights."""
    out, results = straight_run
    run_quietly(config_for(tiny_demo_model_dir, embedded_prompts, tmp_path, "--rounds", "1"))
    (tmp_path / "round_2").mkdir()  # a kill right after the next round's folder was made
    resumed = run_quietly(config_for(tiny_demo_model_dir, embedded_prompts, tmp_path, "--rounds", "2", "--resume",
                                     "true"))
    assert resumed["rounds"] == results["rounds"]
    assert_same_weights(weights(tmp_path, 2), weights(out, 2))


@pytest.mark.slow
def test_kill_inside_a_round_resumes_to_the_same_result(straight_run, tiny_demo_model_dir, embedded_prompts, tmp_path,
                                                        monkeypatch):
    """A SIGTERM during round 2's PPO (checkpoint saved after its step 1), and a kill after round 2's
    labels: resumed, the same table and weights as the run never stopped."""
    from rlhf.trainers import online
    from rlhf.trainers.signals import StopSignals, TrainingInterrupted

    out, results = straight_run
    calls = {"n": 0}

    class SigtermInRound2PPO(StopSignals):
        def requested(self, accelerator):
            calls["n"] += 1  # online steps: round 1 has 2, so the 3rd is round 2's first
            return signal.SIGTERM if calls["n"] == 3 else 0

    monkeypatch.setattr(online, "StopSignals", SigtermInRound2PPO)
    with pytest.raises(TrainingInterrupted):
        run_quietly(config_for(tiny_demo_model_dir, embedded_prompts, tmp_path, "--rounds", "2"))
    monkeypatch.undo()
    assert (tmp_path / "round_2" / "policy" / "checkpoints").is_dir()
    assert not (tmp_path / "round_2" / "policy" / "summary.json").exists()
    resumed = run_quietly(config_for(tiny_demo_model_dir, embedded_prompts, tmp_path, "--rounds", "2", "--resume",
                                     "true"))
    assert resumed["rounds"] == results["rounds"]
    assert_same_weights(weights(tmp_path, 2), weights(out, 2))


def test_bad_options_are_one_line_errors(tiny_demo_model_dir, embedded_prompts, tmp_path):
    with pytest.raises(ConfigError, match="feedback must be one of people, gold, ai, labeling, got 'crowd'"):
        config_for(tiny_demo_model_dir, embedded_prompts, tmp_path, "--feedback", "crowd")
    with pytest.raises(ConfigError, match="samples_per_prompt must be at least 2"):
        config_for(tiny_demo_model_dir, embedded_prompts, tmp_path, "--samples_per_prompt", "1")
    with pytest.raises(ConfigError, match=r"holds 24 prompts: too few for 4 rounds of 8 fresh prompts"):
        run_quietly(config_for(tiny_demo_model_dir, embedded_prompts, tmp_path, "--rounds", "4"))
    with pytest.raises(UserError, match="has no function 'no_such_gold'"):  # before any round starts
        run_quietly(config_for(tiny_demo_model_dir, embedded_prompts, tmp_path / "gold", "--gold_reward_function",
                               "rlhf.embedded.gold:no_such_gold"))
    assert not (tmp_path / "gold" / "round_1").exists()


def test_labeling_feedback_waits_for_the_project_then_exports_it(tmp_path):
    """feedback labeling: the round's samples become a project in round_dir/labels.db; the round
    waits (here: a fake sleep in which a person labels everything, preferring the shortest
    response) and then returns the labels as rankings; a resumed round reopens the same project."""
    from rlhf.feedback.labeling import LabelStore
    from rlhf.pipeline.iterate_steps import labeling_url, rank_in_labeling_project

    config = parse_config(IterateConfig, ["--model_name_or_path", "m", "--prompts_file", "p", "--feedback", "labeling",
                                          "--labeling_poll_seconds", "0"])
    records = [{"prompt": f"q{i}", "responses": ["a long answer", "ab", "abc def"], "ended": [True, True, False]}
               for i in range(3)]
    waits = []

    def label_everything(_seconds):
        waits.append(_seconds)
        store = LabelStore(labeling_url(tmp_path))
        account = store.authenticate(store.add_labeler(f"ann{len(waits)}"))
        while (item := store.next_item(account)) is not None:
            shortest_first = sorted(range(item["k"]), key=lambda p: len(item["responses"][p]))
            store.submit(account, {"item_id": item["item_id"], "kind": "ranking", "ranking": shortest_first})
        store.close()

    ranked = rank_in_labeling_project(config, records, tmp_path, seed=0, sleep=label_everything)
    assert len(waits) == 1 and (tmp_path / "labels.db").is_file()
    assert sorted(r["prompt"] for r in ranked) == ["q0", "q1", "q2"]
    for r in ranked:  # best first: "ab" (1), "abc def" (2), "a long answer" (0)
        assert r["responses"] == records[0]["responses"] and r["ranking"] == [1, 2, 0] and r["labeler"] == "ann1"
    again = rank_in_labeling_project(config, records, tmp_path, seed=0, sleep=label_everything)
    assert again == ranked and len(waits) == 1  # complete already: no waiting, no second project


def test_labeling_feedback_gives_up_after_the_timeout(tmp_path):
    from rlhf.pipeline.iterate_steps import rank_in_labeling_project

    config = parse_config(IterateConfig, ["--model_name_or_path", "m", "--prompts_file", "p", "--feedback", "labeling",
                                          "--labeling_timeout_hours", "1"])
    now = [0.0]

    def sleep(seconds):
        now[0] += seconds

    records = [{"prompt": "q", "responses": ["x", "y"], "ended": [True, True]}]
    with pytest.raises(ConfigError, match="1 items still lack labels after 1 h; run again with --resume"):
        rank_in_labeling_project(config, records, tmp_path, seed=0, sleep=sleep, clock=lambda: now[0])


def test_the_command_lists_its_options_and_refuses_a_bad_one(tmp_path):
    import subprocess
    import sys

    run = lambda *args: subprocess.run([sys.executable, "-m", "rlhf", "iterate", *args], capture_output=True,  # noqa: E731
                                       text=True, cwd=tmp_path)
    shown = run("--help")
    assert shown.returncode == 0 and "--rounds" in shown.stdout and "--policy_method" in shown.stdout
    bad = run("--model_name_or_path", "m", "--prompts_file", "p.jsonl", "--policy_method", "sft")
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1] == ("rlhf iterate: error: policy_method must be one of ppo, dpo, "
                                                   "best_of_n, got 'sft'")


# One round with each other feedback source and policy method: what the round wrote.
ONE_ROUND = {"dpo": {"max_steps": 2, "per_device_train_batch_size": 4, "eval_fraction": 0.25, "save_steps": 2},
             "sft": {"max_steps": 2, "per_device_train_batch_size": 4, "save_steps": 2}}


def one_round(model, prompts, out, *extra):
    config = config_for(model, prompts, out, "--rounds", "1", "--dpo", json.dumps(ONE_ROUND["dpo"]), "--sft",
                        json.dumps(ONE_ROUND["sft"]), *extra)
    return run_quietly(config)


def read_lines(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def assert_round_written(out, results, stage, start_model):
    """round_1 holds the samples, labels, reward model and the trained policy (trained by ``stage``,
    from ``start_model``, its weights moved); the table has the start row and round 1's."""
    rd = out / "round_1"
    samples, labels = read_lines(rd / "samples.jsonl"), read_lines(rd / "labels.jsonl")
    assert samples and labels and {r["prompt"] for r in labels} <= {s["prompt"] for s in samples}
    assert (rd / "rm" / "model").is_dir() and (rd / "eval.json").is_file()
    policy_config = (rd / "policy" / "config.yaml").read_text()
    assert f"model_name_or_path: {start_model}\n" in policy_config
    assert json.loads((rd / "policy" / "summary.json").read_text())["stage"] == stage
    trained, start = weights(out, 1), load_file(str(Path(start_model) / "model.safetensors"))
    assert any(not trained[name].equal(start[name]) for name in trained)
    assert [r["round"] for r in results["rounds"]] == [1] and results["rounds"][0]["labels_so_far"] == len(labels)
    table = (out / "iterate_table.md").read_text().splitlines()
    assert table[2].startswith("| 0 (start) |") and table[3].startswith("| 1 |") and len(table) == 4
    return labels


def test_ai_feedback_ranks_with_a_tiny_judge(tiny_demo_model_dir, tiny_model_dir, embedded_prompts, tmp_path):
    """--feedback ai: a tiny causal LM judges (position flips kept: a random judge flips most);
    the labels are the judge's, its answers cached and summarised in the round's folder."""
    results = one_round(tiny_demo_model_dir, embedded_prompts, tmp_path, "--feedback", "ai", "--judge",
                        tiny_model_dir, "--keep_position_flips", "true")
    labels = assert_round_written(tmp_path, results, "ppo", tiny_demo_model_dir)
    assert {r["labeler"] for r in labels} == {f"ai:{tiny_model_dir.name}"}
    assert all(sorted(r["ranking"]) == list(range(len(r["responses"]))) for r in labels)
    summary = json.loads((tmp_path / "round_1" / "judge_summary.json").read_text())
    assert summary["pairs"] == sum(len(r["responses"]) * (len(r["responses"]) - 1) // 2 for r in labels)
    assert (tmp_path / "round_1" / "judge_cache.jsonl").stat().st_size > 0


def test_dpo_rounds_train_the_policy_on_the_labels(tiny_demo_model_dir, embedded_prompts, tmp_path):
    from rlhf.embedded.labelers import labeler_pool

    results = one_round(tiny_demo_model_dir, embedded_prompts, tmp_path, "--policy_method", "dpo")
    labels = assert_round_written(tmp_path, results, "dpo", tiny_demo_model_dir)
    assert {r["labeler"] for r in labels} <= {labeler.name for labeler in labeler_pool(seed=0)}
    policy_config = (tmp_path / "round_1" / "policy" / "config.yaml").read_text()
    assert f"train_file: {tmp_path / 'round_1' / 'rm_train.jsonl'}\n" in policy_config  # all labels so far
    assert f"ref_model_path: {tiny_demo_model_dir}\n" in policy_config


def test_best_of_n_rounds_fine_tune_on_the_reward_models_choices(tiny_demo_model_dir, embedded_prompts, tmp_path):
    from rlhf.embedded.labelers import labeler_pool

    results = one_round(tiny_demo_model_dir, embedded_prompts, tmp_path, "--policy_method", "best_of_n",
                        "--best_of_n", 3)
    labels = assert_round_written(tmp_path, results, "sft", tiny_demo_model_dir)
    assert {r["labeler"] for r in labels} <= {labeler.name for labeler in labeler_pool(seed=0)}
    demonstrations = read_lines(tmp_path / "round_1" / "best_of_n.jsonl")
    round_prompts = {r["prompt"] for r in read_lines(embedded_prompts / "train.jsonl")[:8]}
    assert demonstrations and all(d["prompt"] in round_prompts and d["completion"].strip() for d in demonstrations)
    policy_config = (tmp_path / "round_1" / "policy" / "config.yaml").read_text()
    assert f"train_file: {tmp_path / 'round_1' / 'best_of_n.jsonl'}\n" in policy_config


def test_a_judge_that_gives_no_labels_stops_the_round_with_the_reason(tiny_model_dir, tmp_path):
    """A random tiny judge changes its verdict with the order on every pair: without
    --keep_position_flips no pair gets a label, and the round says so instead of training on none."""
    from rlhf.pipeline.iterate_steps import rank_with_judge

    config = parse_config(IterateConfig, ["--model_name_or_path", "m", "--prompts_file", "p", "--feedback", "ai",
                                          "--judge", str(tiny_model_dir)])
    records = [{"prompt": "\n\nHuman: what is one plus two?\n\nAssistant:", "responses": [" three", " four", " no"],
                "ended": [True, True, True]}] * 2
    with pytest.raises(ConfigError, match=r"gave no labels: its verdict changed with the order of the two responses "
                                          r"on 6 of 6 pairs \(position bias\); use a better judge or "
                                          r"--keep_position_flips true"):
        rank_with_judge(config, records, tmp_path / "judge_cache.jsonl", seed=0)
    config.keep_position_flips = True
    ranked = rank_with_judge(config, records, tmp_path / "judge_cache.jsonl", seed=0)
    assert len(ranked) == 2 and all(sorted(r["ranking"]) == [0, 1, 2] for r in ranked)
