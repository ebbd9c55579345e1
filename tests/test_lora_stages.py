"""--use_peft on SFT, the reward model and DPO, tested as PPO's LoRA is (test_trainers.py): only the
adapters (and the reward model's scalar head) change, the merged deltas have rank <= r, one model is
loaded, and each stage writes the adapter beside the merged model."""

import json
import math
from pathlib import Path

import pytest
import torch

from rlhf.config.base import ConfigError, parse_config
from rlhf.config.dpo import DPOConfig
from rlhf.config.reward import RewardConfig
from rlhf.config.sft import SFTConfig
from rlhf.trainers import dpo, reward, sft

RANK = 4
LORA = ["--use_peft", "true", "--lora_r", str(RANK), "--lora_alpha", "8", "--report_to", "none",
        "--disable_tqdm", "true"]
POLICY_TARGETS = ("c_attn.weight", "c_fc.weight", "c_proj.weight", "lm_head.weight")


def metrics(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def assert_low_rank_deltas(start: dict, trained: dict, adapted_suffixes: tuple[str, ...], skip: tuple[str, ...] = ()):
    """Every adapted weight moved by a matrix of rank 1..RANK; every other weight is unchanged."""
    adapted = [k for k in start if k.endswith(adapted_suffixes)]
    assert adapted
    for key, before in start.items():
        if key.startswith(skip):
            continue
        delta = trained[key] - before
        if key in adapted:  # singular values under 1e-4 of the largest are fp32 rounding of the merge
            assert 0 < torch.linalg.matrix_rank(delta, atol=1e-6, rtol=1e-4) <= RANK, key
        else:
            assert torch.equal(delta, torch.zeros_like(delta)), key  # frozen


def test_sft_with_lora_trains_adapters_only(tiny_model_dir, toy_data, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    loads = []
    load = sft.load_model_and_tokenizer
    monkeypatch.setattr(sft, "load_model_and_tokenizer", lambda *a, **k: loads.append(a[0]) or load(*a, **k))
    config = parse_config(SFTConfig, [
        "--model_name_or_path", str(tiny_model_dir), "--train_file", str(toy_data["demos"]), "--output_dir",
        str(tmp_path), "--eval_fraction", "0.2", "--max_steps", "30", "--learning_rate", "1e-2",
        "--lora_target_modules", ",".join(t.removesuffix(".weight") for t in POLICY_TARGETS), *LORA])
    summary = sft.run(config)
    assert loads == [str(tiny_model_dir)]
    assert summary["eval/loss"] < summary["eval/loss_before"] - 0.5  # the adapters alone still learn
    start = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    trained = AutoModelForCausalLM.from_pretrained(tmp_path / "model").state_dict()
    assert_low_rank_deltas(start, trained, POLICY_TARGETS)
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["r"] == RANK


def test_reward_model_with_lora_trains_head_fully_and_backbone_through_adapters(tiny_model_dir, toy_data, tmp_path,
                                                                                monkeypatch):
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    from rlhf.models.lora import SCALAR_HEAD_FILE
    from rlhf.models.scalar_model import ScalarModel

    loads = []
    from_pretrained = ScalarModel.from_pretrained.__func__
    monkeypatch.setattr(ScalarModel, "from_pretrained",
                        classmethod(lambda cls, *a, **k: loads.append(a[0]) or from_pretrained(cls, *a, **k)))
    config = parse_config(RewardConfig, [
        "--model_name_or_path", str(tiny_model_dir), "--train_file", str(toy_data["pairs"]), "--output_dir",
        str(tmp_path), "--max_steps", "20", "--learning_rate", "1e-2", "--lora_target_modules", "c_attn,c_fc,c_proj",
        *LORA])
    with pytest.warns(UserWarning, match="not an `rlhf sft` checkpoint"):
        summary = reward.run(config)
    assert loads == [str(tiny_model_dir)]
    assert summary["eval/accuracy"] > 0.95
    load_head = dict(num_labels=1)
    start = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, **load_head).state_dict()
    trained = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model", **load_head).state_dict()
    # The head is new at the start (random), so its delta is not compared; it is saved with the adapter.
    assert_low_rank_deltas(start, trained, ("c_attn.weight", "c_fc.weight", "c_proj.weight"), skip=("score.",))
    head = load_file(tmp_path / "adapter" / SCALAR_HEAD_FILE)
    assert torch.equal(head["weight"], trained["score.weight"])
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "model" / "reward_stats.json").is_file()


def test_dpo_with_lora_uses_the_adapter_free_model_as_reference(tiny_model_dir, toy_data, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    loads = []
    load = dpo.load_causal_lm
    monkeypatch.setattr(dpo, "load_causal_lm", lambda *a, **k: loads.append(a[0]) or load(*a, **k))
    config = parse_config(DPOConfig, [
        "--model_name_or_path", str(tiny_model_dir), "--train_file", str(toy_data["pairs"]), "--output_dir",
        str(tmp_path), "--max_steps", "15", "--learning_rate", "1e-2", "--beta", "0.5", "--logging_steps", "1",
        "--lora_target_modules", ",".join(t.removesuffix(".weight") for t in POLICY_TARGETS), *LORA])
    summary = dpo.run(config)
    assert loads == [str(tiny_model_dir)]  # the policy only: the reference is the policy without adapters
    rows = [m for m in metrics(tmp_path) if "loss/dpo" in m]
    # LoRA's B starts at 0, so at step 1 policy == reference: every log-ratio is 0 and the loss is
    # -log sigma(0) = log 2 = 0.6931; a reference that moved with the policy would keep it there.
    assert rows[0]["loss/dpo"] == pytest.approx(math.log(2), abs=1e-5)
    assert rows[-1]["loss/dpo"] < 0.3 and summary["eval/accuracy"] > 0.95
    start = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    trained = AutoModelForCausalLM.from_pretrained(tmp_path / "model").state_dict()
    assert_low_rank_deltas(start, trained, POLICY_TARGETS)
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("config_cls,extra", [(SFTConfig, ["--train_file", "t"]), (RewardConfig, ["--train_file", "t"]),
                                              (DPOConfig, ["--train_file", "t"])])
def test_every_stage_takes_the_lora_options_and_checks_them(config_cls, extra):
    config = parse_config(config_cls, ["--model_name_or_path", "m", *extra, "--use_peft", "true", "--lora_r", "8",
                                       "--lora_alpha", "16", "--lora_dropout", "0.1", "--lora_target_modules", "all-linear"])
    assert (config.use_peft, config.lora_r, config.lora_alpha, config.lora_dropout) == (True, 8, 16, 0.1)
    with pytest.raises(ConfigError, match="lora_r must be > 0, got 0"):
        parse_config(config_cls, ["--model_name_or_path", "m", *extra, "--use_peft", "true", "--lora_r", "0"])


def test_dpo_with_lora_refuses_a_separate_reference():
    with pytest.raises(ConfigError, match="adapters disabled: leave ref_model_path empty"):
        parse_config(DPOConfig, ["--model_name_or_path", "m", "--train_file", "t", "--use_peft", "true",
                                 "--ref_model_path", "r"])
