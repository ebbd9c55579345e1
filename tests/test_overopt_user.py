"""``rlhf overopt`` on a user's own task: your SFT policy, prompt files and gold function, with the
embedded world's gold, labelers and data disabled; the gold labeler's pairs by hand; each bad
option's message."""

import json
import subprocess
import sys
import warnings

import pytest
import torch

from rlhf.config.base import ConfigError, parse_config
from rlhf.errors import UserError
from rlhf.pipeline.overopt import OveroptConfig
from rlhf.pipeline.overopt_user import gold_pairs

GOLD_SOURCE = '''
CONSTANT = 3


def gold(prompts, responses, ended):
    """Your task's gold: the share of the letter e, plus 0.01 a character (rarely a tie)."""
    return [r.count("e") / max(1, len(r)) + 0.01 * len(r) for r in responses]
'''


class ScriptedRng:
    def __init__(self, draws):
        self.draws = list(draws)

    def random(self):
        return self.draws.pop(0)


def test_gold_pairs_by_hand():
    # best first by gold: 1 (2.0), 3 (1.0), 0 (0.5), 2 (0.5); 0 and 2 tie: no pair between them
    assert gold_pairs([0.5, 2.0, 0.5, 1.0], 0.0, ScriptedRng([0.5] * 5)) == [(1, 3), (1, 0), (1, 2), (3, 0), (3, 2)]
    # flip_rate 0.25: the 2nd and 5th draws (0.1 < 0.25) flip their pairs, the others (0.9) do not
    assert gold_pairs([0.5, 2.0, 0.5, 1.0], 0.25, ScriptedRng([0.9, 0.1, 0.9, 0.9, 0.1])) == [
        (1, 3), (0, 1), (1, 2), (3, 0), (2, 3)]
    assert gold_pairs([1.0, 1.0, 1.0], 0.25, ScriptedRng([])) == []  # all tied: no labels, no draws


@pytest.fixture
def user_task(tmp_path, toy_data):
    """A gold function in a file of its own, train prompts (the toy data's 32) and 8 held-out prompts."""
    (tmp_path / "my_gold.py").write_text(GOLD_SOURCE)
    lines = toy_data["prompts"].read_text().splitlines()
    (tmp_path / "eval.jsonl").write_text("\n".join(lines[-8:]) + "\n")
    return {"gold": f"{tmp_path / 'my_gold.py'}:gold", "train": str(toy_data["prompts"]),
            "eval": str(tmp_path / "eval.jsonl"), "root": tmp_path}


def user_args(model, task, out, *extra):
    return ["--gold_reward_function", task["gold"], "--model_name_or_path", str(model), "--prompts_file",
            task["train"], "--eval_prompts_file", task["eval"], "--output_dir", str(out), "--data_amounts", "8,16",
            "--samples_per_prompt", "3", "--ensemble_size", "1", "--ppo_kl_coefs", "0", "--bon_prompts", "2",
            "--bon_max_n", "4", "--ppo_steps", "2", "--eval_every", "1", "--eval_prompts",
            "4", "--ppo_rollout_batch_size", "8", "--max_new_tokens", "8", "--disable_tqdm", "true", *map(str, extra)]


def no_embedded_task(monkeypatch):
    """Every entry to the embedded task's world fails the test if the user-task path reaches it."""
    import rlhf.embedded.gold
    import rlhf.embedded.labelers
    import rlhf.embedded.task_data
    import rlhf.pipeline.demo
    import rlhf.pipeline.overopt

    def forbidden(*args, **kwargs):
        raise AssertionError("the user-task path used the embedded task")

    for module, name in ((rlhf.embedded.gold, "gold_rewards"), (rlhf.embedded.gold, "gold_reward"),
                         (rlhf.embedded.labelers, "gold_labeler"), (rlhf.embedded.labelers, "labeler_pool"),
                         (rlhf.embedded.task_data, "generate_task_data"), (rlhf.pipeline.demo, "rank_sft_samples"),
                         (rlhf.pipeline.overopt, "rank_sft_samples"), (rlhf.pipeline.overopt, "gold_flip_comparisons")):
        monkeypatch.setattr(module, name, forbidden)


def test_user_task_runs_end_to_end_without_the_embedded_task(tiny_model_dir, user_task, monkeypatch):
    from rlhf.pipeline import overopt

    no_embedded_task(monkeypatch)
    out = user_task["root"] / "study"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 2-layer model gains nothing from a second thread, and loses much on a busy machine
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results = overopt.run(parse_config(OveroptConfig, user_args(tiny_model_dir, user_task, out)))
    finally:
        torch.set_num_threads(threads)
    assert results["gold_reward_function"] == user_task["gold"]
    assert set(results["proxies"]) == {"gold_flip_8", "gold_flip_16"}
    assert set(results["best_of_n"]["curves"]) == {"gold_flip_8", "gold_flip_16"}
    assert [p["n"] for p in results["best_of_n"]["curves"]["gold_flip_16"]] == [1, 2, 4]
    assert set(results["rl"]) == {"beta=0"}  # against gold_flip_8, the smallest amount: the default ppo_proxy
    assert [p["step"] for p in results["rl"]["beta=0"]["curve"]] == [0, 1, 2]
    ppo_config = (out / "ppo" / "beta0" / "config.yaml").read_text()
    assert f"reward_model_path: {out / 'rm' / 'gold_flip_8' / 'model'}\n" in ppo_config
    assert (out / "overopt.png").stat().st_size > 10_000 and (out / "overopt_report.md").is_file()
    assert f"Gold reward: {user_task['gold']}\n" in (out / "overopt_report.md").read_text()
    assert not (out / "sft").exists() and not (out / "data" / "prompts_train.jsonl").exists()  # no SFT, no task data
    # PPO trained on your prompts, its curve scored by your gold; the proxies started from your policy
    assert user_task["train"] in ppo_config and user_task["gold"] in ppo_config
    assert str(tiny_model_dir) in (out / "rm" / "gold_flip_8" / "config.yaml").read_text()
    # the labels: your gold orders every pair, some flipped; the 8-prompt proxy sees the first 8 prompts only
    import importlib.util

    spec = importlib.util.spec_from_file_location("my_gold", user_task["root"] / "my_gold.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    pairs = [json.loads(line) for line in (out / "data" / "comparisons_gold_flip.jsonl").read_text().splitlines()]
    golds = [module.gold([p["prompt"]] * 2, [p["chosen"], p["rejected"]], [True, True]) for p in pairs]
    assert all(c != r for c, r in golds)  # ties give no pair
    flipped = sum(c < r for c, r in golds)
    assert len(pairs) > 20 and 0 < flipped < len(pairs) / 2
    small = [json.loads(line) for line in (out / "data" / "proxy_gold_flip_8.jsonl").read_text().splitlines()]
    assert small and all(p["ranking_index"] < 8 for p in small) and len(small) < len(pairs)


@pytest.mark.parametrize("args,message", [
    (["--model_name_or_path", "MODEL"], "needs --prompts_file"),
    (["--model_name_or_path", "MODEL", "--prompts_file", "a", "--eval_prompts_file", "b", "--label_sources",
      "pool,gold_flip"], "label_sources pool: the simulated labeler pool exists only on the embedded task"),
    (["--model_name_or_path", "MODEL", "--prompts_file", "a", "--eval_prompts_file", "b", "--demo_dir", "d"],
     "demo_dir reuses an embedded-task demo"),
    ([], "needs --model_name_or_path: your SFT policy (the default is the embedded task's untrained base model)"),
])
def test_user_task_options_are_checked(args, message):
    with pytest.raises(UserError) as error:
        parse_config(OveroptConfig, ["--gold_reward_function", "my_gold.py:gold", *args])
    assert message in str(error.value)


def test_prompts_files_without_a_gold_function_are_refused():
    with pytest.raises(ConfigError, match="prompts_file is for your own task: pass --gold_reward_function too"):
        parse_config(OveroptConfig, ["--prompts_file", "p.jsonl"])


@pytest.mark.parametrize("change,message", [
    ({"eval": "missing.jsonl"}, "eval_prompts_file missing.jsonl does not exist"),
    ({"gold": "my_gold.py:nope"}, "has no function 'nope' (its functions: gold)"),
    ({"gold": "my_gold.py:CONSTANT"}, "CONSTANT is a int, not a function"),
])
def test_bad_files_and_gold_functions_name_what_is_wrong(tiny_model_dir, user_task, change, message, monkeypatch):
    from rlhf.pipeline import overopt

    monkeypatch.chdir(user_task["root"])
    task = {**user_task, **change}
    with pytest.raises(UserError) as error:
        overopt.run(parse_config(OveroptConfig, user_args(tiny_model_dir, task, user_task["root"] / "study")))
    assert message in str(error.value)


def test_too_few_prompts_for_the_data_amounts_is_one_line(tiny_model_dir, user_task):
    from rlhf.pipeline import overopt

    config = parse_config(OveroptConfig, user_args(tiny_model_dir, user_task, user_task["root"] / "study",
                                                   "--data_amounts", "8,64"))
    with pytest.raises(ConfigError, match=r"holds 32 prompts: data_amounts needs 64 \(the largest proxy"):
        overopt.run(config)


def test_the_command_prints_the_reason_pool_is_refused(tmp_path):
    result = subprocess.run([sys.executable, "-m", "rlhf", "overopt", "--gold_reward_function", "g.py:gold",
                             "--model_name_or_path", "m", "--prompts_file", "a", "--eval_prompts_file", "b",
                             "--label_sources", "pool"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        "rlhf overopt: error: label_sources pool: the simulated labeler pool exists only on the embedded task")
