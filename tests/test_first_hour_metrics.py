"""Issue 13, metrics and model limits: metrics averaged over examples (not batches), the model's
position limit as max_length, gradient checkpointing on every stage, progress for long phases."""

import json
import math

import pytest
import torch
from accelerate import Accelerator

from conftest import arithmetic_prompt, write_jsonl
from rlhf.config.base import ConfigError, parse_config
from rlhf.config.dpo import DPOConfig
from rlhf.config.reward import RewardConfig
from rlhf.config.sft import SFTConfig
from rlhf.data import collate_pairs, load_comparisons, tokenize_comparisons
from rlhf.losses import dpo_loss
from rlhf.models.loading import enable_gradient_checkpointing, load_causal_lm, load_tokenizer, resolve_max_length
from rlhf.trainers import dpo, reward, sft
from rlhf.trainers.reward import stats_sample
from rlhf.trainers.supervised import EXAMPLES, mean_over_examples


def test_mean_over_examples_weighs_each_example_once():
    accelerator = Accelerator(cpu=True)
    entries = [{"acc": 1.0, "loss": 0.5, EXAMPLES: 4.0}, {"acc": 0.0, "loss": 2.0, EXAMPLES: 3.0}]
    means = mean_over_examples(entries, accelerator)
    assert means == pytest.approx({"acc": 4 / 7, "loss": (4 * 0.5 + 3 * 2.0) / 7})  # not (1 + 0) / 2
    # entries without a count (a checkpoint written before counts were kept) weigh one each
    assert mean_over_examples([{"acc": 1.0}, {"acc": 0.0}], accelerator) == {"acc": 0.5}
    assert math.isnan(mean_over_examples([], accelerator, keys=["acc"])["acc"])  # no examples anywhere: 0 / 0


def test_dpo_eval_averages_over_pairs_not_batches(tiny_model_dir, toy_data, tmp_path):
    # 12 pairs as trained, then 11 flipped: batches of 4 give 3 right batches and 3 wrong ones
    # (batch mean of means 0.5), while 12 of the 23 pairs are right (0.5217).
    prompts = [arithmetic_prompt(a, b) for a in range(1, 5) for b in range(1, 7)][:23]
    rows = [{"prompt": p, "chosen": " yes good", "rejected": " no bad"} if i < 12 else
            {"prompt": p, "chosen": " no bad", "rejected": " yes good"} for i, p in enumerate(prompts)]
    eval_file = write_jsonl(tmp_path / "eval.jsonl", rows)
    config = parse_config(DPOConfig, [
        "--model_name_or_path", str(tiny_model_dir), "--train_file", str(toy_data["pairs"]), "--eval_file",
        str(eval_file), "--output_dir", str(tmp_path / "out"), "--max_steps", "8", "--learning_rate", "2e-3",
        "--beta", "0.5", "--per_device_train_batch_size", "4", "--disable_tqdm", "true", "--report_to", "none"])
    summary = dpo.run(config)

    # The same numbers pair by pair, with the saved policy and the reference.
    tokenizer = load_tokenizer(tmp_path / "out" / "model")
    policy, ref = load_causal_lm(tmp_path / "out" / "model", tokenizer), load_causal_lm(tiny_model_dir, tokenizer)
    pairs = tokenize_comparisons(load_comparisons(eval_file), tokenizer, max_length=256)
    losses, right = [], []
    with torch.no_grad():
        for pair in pairs:
            batch = collate_pairs([pair], tokenizer.pad_token_id)
            loss, stats = dpo_loss(*dpo.pair_logprobs(policy, batch, False), *dpo.pair_logprobs(ref, batch, False),
                                   beta=0.5)
            losses.append(loss.item())
            right.append(stats["accuracy"].item())
    assert sum(right) == 12  # the trained policy ranks every pair the way it was trained
    assert summary["eval/accuracy"] == pytest.approx(12 / 23, abs=1e-9)
    assert summary["eval/loss"] == pytest.approx(sum(losses) / 23, rel=1e-4)


def test_stats_sample_is_a_seeded_subset_of_the_requested_size():
    pairs = [{"i": i} for i in range(1000)]
    sample = stats_sample(pairs, 300, seed=0)
    assert len(sample) == 300 and sample == stats_sample(pairs, 300, seed=0)
    assert max(p["i"] for p in sample) > 600  # spread over the file, not its first 300 lines
    assert stats_sample(pairs[:10], 300, seed=0) == pairs[:10]
    assert RewardConfig.__dataclass_fields__["stats_max_pairs"].default <= 500  # a few hundred by default


# ---- max_length and the model's position limit ---------------------------------------------------

class _Config:
    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


def test_max_length_defaults_to_the_models_limit_and_may_not_exceed_it():
    assert resolve_max_length(0, _Config(n_positions=256), "m") == 256
    assert resolve_max_length(0, _Config(max_position_embeddings=8192), "m") == 8192
    assert resolve_max_length(128, _Config(n_positions=256), "m") == 128
    with pytest.raises(ConfigError, match=r"max_length 512 is longer than m can take \(256 positions"):
        resolve_max_length(512, _Config(n_positions=256), "m")
    with pytest.raises(ConfigError, match="gives no position limit; set --max_length"):
        resolve_max_length(0, _Config(), "m")
    with pytest.raises(ConfigError, match="max_length must be 0"):
        parse_config(SFTConfig, ["--model_name_or_path", "m", "--train_file", "t", "--max_length", "1"])


def long_demos(tmp_path, n=8):
    text = " ".join(["the cat"] * 200)  # ~400 tokens: longer than the tiny model's 256 positions
    return write_jsonl(tmp_path / "long.jsonl", [{"prompt": arithmetic_prompt(1, 2), "completion": text}] * n)


def test_sft_on_long_data_with_the_default_max_length_fits_the_model(tiny_model_dir, tmp_path):
    config = parse_config(SFTConfig, ["--model_name_or_path", str(tiny_model_dir), "--train_file",
                                      str(long_demos(tmp_path)), "--output_dir", str(tmp_path / "out"),
                                      "--max_steps", "1", "--disable_tqdm", "true", "--report_to", "none"])
    summary = sft.run(config)  # before: the default 512 overflowed 256 positions with an IndexError
    assert summary["max_length"] == 256


def test_sft_refuses_a_max_length_past_the_models_limit_before_training(tiny_model_dir, tmp_path):
    config = parse_config(SFTConfig, ["--model_name_or_path", str(tiny_model_dir), "--train_file",
                                      str(long_demos(tmp_path)), "--output_dir", str(tmp_path / "out"),
                                      "--max_steps", "1", "--max_length", "1000", "--report_to", "none"])
    with pytest.raises(ConfigError, match=r"max_length 1000 is longer than .* \(256 positions"):
        sft.run(config)
    assert not (tmp_path / "out" / "metrics.jsonl").exists()


# ---- gradient checkpointing ---------------------------------------------------------------------

def count_block_forwards(monkeypatch):
    """Count GPT-2 attention forwards: with checkpointing each block runs again in the backward
    pass. (Not the block's own forward: transformers wraps that one to checkpoint it.)"""
    from transformers.models.gpt2 import modeling_gpt2

    calls = {"n": 0}
    original = modeling_gpt2.GPT2Attention.forward

    def counted(self, *args, **kwargs):
        calls["n"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(modeling_gpt2.GPT2Attention, "forward", counted)
    return calls


STAGES = {
    "sft": (SFTConfig, sft.run, "demos", "loss/sft"),
    "rm": (RewardConfig, reward.run, "pairs", "loss/rm"),
    "dpo": (DPOConfig, dpo.run, "pairs", "loss/dpo"),
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_gradient_checkpointing_recomputes_and_gives_the_same_loss(stage, tiny_model_dir, toy_data, tmp_path,
                                                                   monkeypatch):
    config_class, runner, data, loss_key = STAGES[stage]
    results = {}
    for flag in ("false", "true"):
        calls = count_block_forwards(monkeypatch)
        out = tmp_path / flag
        config = parse_config(config_class, [
            "--model_name_or_path", str(tiny_model_dir), "--train_file", str(toy_data[data]), "--output_dir", str(out),
            "--max_steps", "2", "--logging_steps", "1", "--eval_fraction", "0", "--disable_tqdm", "true",
            "--report_to", "none", "--gradient_checkpointing", flag, "--per_device_train_batch_size", "4",
            *(["--stats_max_pairs", "4"] if stage == "rm" else [])])
        runner(config)
        lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        results[flag] = (calls["n"], [x[loss_key] for x in lines if loss_key in x])
    (plain_calls, plain_losses), (ckpt_calls, ckpt_losses) = results["false"], results["true"]
    assert ckpt_calls > plain_calls  # blocks ran again in the backward passes
    assert ckpt_losses == pytest.approx(plain_losses, abs=1e-5)  # and the numbers are the same


def test_enable_gradient_checkpointing_reaches_nested_models(tiny_model_dir):
    from rlhf.models.policy_value import PolicyAndValue
    from rlhf.models.scalar_model import ScalarModel

    tokenizer = load_tokenizer(tiny_model_dir)
    policy = load_causal_lm(tiny_model_dir, tokenizer)
    value = ScalarModel.from_pretrained(tiny_model_dir, tokenizer, **_fresh_head_kwargs())
    pair = PolicyAndValue(policy, value)
    assert enable_gradient_checkpointing(pair) >= 2
    assert policy.is_activation_checkpointing and value.hf_model.is_activation_checkpointing


def _fresh_head_kwargs():
    """ScalarModel.from_pretrained's keyword for starting a head from a causal LM, if it has one."""
    import inspect

    from rlhf.models.scalar_model import ScalarModel

    params = inspect.signature(ScalarModel.from_pretrained).parameters
    return {name: True for name in params if "head" in name}


# ---- progress for long phases -------------------------------------------------------------------

def test_sft_evaluation_shows_its_progress(tiny_model_dir, toy_data, capsys):
    from rlhf.data import load_demonstrations, tokenize_demonstrations

    tokenizer = load_tokenizer(tiny_model_dir)
    model = load_causal_lm(tiny_model_dir, tokenizer)
    examples = tokenize_demonstrations(load_demonstrations(toy_data["demos"]), tokenizer, max_length=64)
    sft.evaluate(model, examples, tokenizer.pad_token_id, 16, Accelerator(cpu=True), progress="sft eval")
    err = capsys.readouterr().err
    assert "sft eval (128 examples)" in err


def test_ppo_gradient_checkpointing_recomputes_and_gives_the_same_losses(tiny_model_dir, toy_data, tmp_path,
                                                                        monkeypatch):
    from pathlib import Path

    from rlhf.config.ppo import PPOConfig
    from rlhf.trainers import ppo

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    results = {}
    for flag in ("false", "true"):
        calls = count_block_forwards(monkeypatch)
        out = tmp_path / flag
        config = parse_config(PPOConfig, [
            "--model_name_or_path", str(tiny_model_dir), "--reward_function", "reward_functions:target_char_rate",
            "--prompts_file", str(toy_data["prompts"]), "--output_dir", str(out), "--max_steps", "1",
            "--rollout_batch_size", "8", "--per_device_train_batch_size", "4", "--max_new_tokens", "4",
            "--ppo_epochs", "1", "--disable_tqdm", "true", "--report_to", "none", "--gradient_checkpointing", flag])
        with pytest.warns(UserWarning, match="skipped SFT"):
            ppo.run(config)
        (line,) = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        results[flag] = (calls["n"], line["loss/policy"], line["loss/value"])
    assert results["true"][0] > results["false"][0]
    assert results["true"][1:] == pytest.approx(results["false"][1:], abs=1e-5)


def test_reward_model_evaluation_and_statistics_show_their_progress(tiny_model_dir, toy_data, capsys):
    from rlhf.models.scalar_model import ScalarModel
    from rlhf.rewards.evaluation import reward_margins, reward_statistics

    tokenizer = load_tokenizer(tiny_model_dir)
    model = ScalarModel.from_pretrained(tiny_model_dir, tokenizer, **_fresh_head_kwargs())
    pairs = tokenize_comparisons(load_comparisons(toy_data["pairs"]), tokenizer, max_length=64)[:40]
    accelerator = Accelerator(cpu=True)
    reward_margins(model, pairs, tokenizer.pad_token_id, 8, accelerator, progress="rm eval")
    reward_statistics(model, pairs, tokenizer.pad_token_id, 8, accelerator, progress="reward statistics")
    reward_margins(model, pairs, tokenizer.pad_token_id, 8, accelerator)  # no description: no bar
    err = capsys.readouterr().err
    assert "rm eval (40 pairs)" in err and "reward statistics (40 pairs)" in err
    assert err.count("(40 pairs)") >= 2 and "(40 pairs)" not in err.split("reward statistics (40 pairs)")[-1]


def test_policy_evaluation_shows_its_progress(tiny_model_dir, toy_data, capsys):
    from rlhf.data import load_prompts, tokenize_prompts
    from rlhf.evaluation.policy_eval import evaluate_policy
    from rlhf.rollout.generation import SamplingParams

    tokenizer = load_tokenizer(tiny_model_dir, padding_side="left")
    model = load_causal_lm(tiny_model_dir, tokenizer)
    prompts = tokenize_prompts(load_prompts(toy_data["prompts"]), tokenizer, max_prompt_length=32)
    evaluate_policy(model, model, tokenizer, prompts, SamplingParams(max_new_tokens=2), batch_size=16,
                    progress="ppo eval")
    assert "ppo eval (32 prompts)" in capsys.readouterr().err
