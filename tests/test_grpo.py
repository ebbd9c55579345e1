"""`rlhf grpo` on the tiny model: it raises a programmatic reward, each estimator and option runs and
logs PPO's metric names, no reference is loaded at beta 0, and bad options are one-line errors."""

import json
from pathlib import Path

import pytest
import torch

from rlhf.config.base import ConfigError, parse_config
from rlhf.config.grpo import GRPOConfig
from rlhf.trainers import grpo

TESTS = Path(__file__).parent


def metrics(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def grpo_args(tiny_model_dir, toy_data, out, *extra):
    return ["--model_name_or_path", str(tiny_model_dir), "--reward_function", "reward_functions:target_char_rate",
            "--prompts_file", str(toy_data["prompts"]), "--output_dir", str(out), "--disable_tqdm", "true",
            "--report_to", "none", *map(str, extra)]


def run_grpo(args):
    with pytest.warns(UserWarning, match="skipped SFT"):
        return grpo.run(parse_config(GRPOConfig, args))


def test_grpo_raises_a_programmatic_reward(tiny_model_dir, toy_data, tmp_path, monkeypatch):
    """8 prompts x G = 4 responses a step, 12 steps: the share of 'e' in the responses must rise well
    above where it starts. A sign error in the advantages or the loss makes it fall instead."""
    monkeypatch.syspath_prepend(str(TESTS))
    run_grpo(grpo_args(tiny_model_dir, toy_data, tmp_path, "--max_steps", 12, "--rollout_batch_size", 8,
                       "--num_generations", 4, "--per_device_train_batch_size", 8, "--max_new_tokens", 8,
                       "--learning_rate", 1e-2, "--beta", 0.01, "--num_iterations", 2))
    rows = [m for m in metrics(tmp_path) if "objective/scores" in m]
    scores = [m["objective/scores"] for m in rows]
    assert len(scores) == 12
    start, end = sum(scores[:2]) / 2, sum(scores[-3:]) / 3
    assert end > start + 0.15 and end > 2 * start, scores
    for name in ("objective/kl", "objective/frac_reward_zero_std", "loss/policy", "loss/kl", "policy/clipfrac",
                 "policy/approx_kl", "policy/entropy", "response/length"):
        assert name in rows[0], name
    assert max(m["policy/clipfrac"] for m in rows) > 0  # 2 passes x 4 minibatches: later ones are off-policy
    assert rows[0]["objective/kl"] == pytest.approx(0.0, abs=1e-4)  # the policy starts as the reference
    assert rows[-1]["objective/kl"] > 0.01
    assert (tmp_path / "model" / "model.safetensors").is_file()


@pytest.mark.parametrize("advantage", ["dr_grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline"])
def test_each_estimator_trains_with_the_kl_in_the_reward(advantage, tiny_model_dir, toy_data, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    run_grpo(grpo_args(tiny_model_dir, toy_data, tmp_path, "--max_steps", 2, "--rollout_batch_size", 4,
                       "--num_generations", 2, "--per_device_train_batch_size", 8, "--max_new_tokens", 6,
                       "--advantage", advantage, "--kl_in_reward", "true", "--beta", 0.05))
    rows = [m for m in metrics(tmp_path) if "objective/scores" in m]
    assert len(rows) == 2
    assert "loss/kl" not in rows[0]  # the KL is in the reward, not in the loss
    assert rows[-1]["objective/non_score_reward"] == pytest.approx(-0.05 * rows[-1]["objective/kl"])
    assert rows[-1]["objective/advantages_abs"] > 0


def test_beta_zero_loads_no_reference_and_weights_several_rewards(tiny_model_dir, toy_data, tmp_path, monkeypatch):
    import rlhf.trainers.online as online_module

    monkeypatch.syspath_prepend(str(TESTS))
    loads = []
    load_causal_lm = online_module.load_causal_lm
    monkeypatch.setattr(online_module, "load_causal_lm", lambda *a, **k: loads.append(a[0]) or load_causal_lm(*a, **k))
    summary = run_grpo(grpo_args(tiny_model_dir, toy_data, tmp_path, "--max_steps", 1, "--rollout_batch_size", 4,
                                 "--num_generations", 2, "--per_device_train_batch_size", 8, "--max_new_tokens", 6,
                                 "--beta", 0, "--reward_function", "reward_functions:target_char_rate,"
                                 "reward_functions:length_reward", "--reward_weights", "2,-0.5",
                                 "--eval_prompts_file", str(toy_data["prompts"])))
    assert loads == [str(tiny_model_dir)]  # the policy alone
    row = [m for m in metrics(tmp_path) if "objective/scores" in m][0]
    assert "objective/kl" not in row and "loss/kl" not in row
    rate, length = row["rewards/reward_functions:target_char_rate"], row["rewards/reward_functions:length_reward"]
    assert row["objective/scores"] == pytest.approx(2 * rate - 0.5 * length, rel=1e-5)
    assert summary["eval/length"] > 0 and "eval/kl" not in summary


def test_mask_truncated_completions_leaves_unended_responses_out_of_the_loss(tiny_model_dir, toy_data, monkeypatch):
    from ppo_fixtures import scored_rollout

    monkeypatch.syspath_prepend(str(TESTS))
    config = parse_config(GRPOConfig, grpo_args(tiny_model_dir, toy_data, "unused", "--rollout_batch_size", 4,
                                                "--num_generations", 2, "--max_new_tokens", 6,
                                                "--per_device_train_batch_size", 8,
                                                "--mask_truncated_completions", "true"))
    _, _, samples, accelerator = scored_rollout(tiny_model_dir, toy_data, config)
    samples.rollout.ended = torch.tensor([True, False] * 2)  # 4 prompts (2 groups of G = 2)
    samples.rollout.logprobs = samples.ref_logprobs.clone()  # as if recorded while sampling
    exp = grpo.make_group_experience(samples, config, accelerator)
    torch.testing.assert_close(exp.loss_mask[1::2], torch.zeros_like(exp.loss_mask[1::2]))
    torch.testing.assert_close(exp.loss_mask[0::2], samples.rollout.response_mask[0::2].float())


@pytest.mark.parametrize("extra, message", [
    (["--advantage", "ppo"], "advantage must be one of grpo, dr_grpo, rloo, reinforce_pp, reinforce_pp_baseline"),
    (["--num_generations", 1], "num_generations must be >= 2 with advantage grpo"),
    (["--scale_rewards", "batch", "--advantage", "rloo"], "scale_rewards applies to advantage grpo only"),
    (["--loss_type", "bnpo"], "loss_type must be token or sequence"),
    (["--reward_weights", "1,2"], r"reward_weights has 2 weight\(s\) for 1 reward\(s\)"),
    (["--reward_weights", "one"], "reward_weights must be comma-separated numbers"),
    (["--beta", 0, "--ref_model_path", "x"], "ref_model_path is set but beta is 0"),
    (["--rollout_batch_size", 3, "--per_device_train_batch_size", 8], r"rollout_batch_size x num_generations \(12"),
    (["--reward_function", ""], "grpo needs at least one reward"),
])
def test_bad_options_are_config_errors(extra, message, tiny_model_dir, toy_data, tmp_path):
    with pytest.raises(ConfigError, match=message):
        parse_config(GRPOConfig, grpo_args(tiny_model_dir, toy_data, tmp_path, *extra))
