"""Gradient accumulation is invisible: 4 accumulated micro-batches of 2 take the same optimizer
steps as one batch of 8, for every stage (SFT, reward model, DPO, and PPO's update on one rollout).

The toy examples all have the same token length, so a mean over 8 equals the mean of 4 means
over 2. AdamW runs with a large epsilon, which makes its first steps proportional to the
gradient (lr * g / (|g| + eps)): a gradient that is off by a factor (a missing division by the
accumulation steps) moves the weights by that factor, instead of being hidden by Adam's
normalisation.
"""

import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlhf.config.base import parse_config
from rlhf.config.dpo import DPOConfig
from rlhf.config.reward import RewardConfig
from rlhf.config.sft import SFTConfig
from rlhf.trainers import dpo, reward, sft
from ppo_fixtures import fixed_length_experience, ppo_config

TESTS = Path(__file__).parent
BIG, ACCUMULATED = (8, 1), (2, 4)  # (per_device_train_batch_size, gradient_accumulation_steps)
OPTIMIZER = ["--learning_rate", "0.05", "--adam_epsilon", "1.0", "--max_grad_norm", "0", "--warmup_ratio", "0",
             "--lr_scheduler_type", "constant"]


def assert_same_steps(start: dict, big: dict, accumulated: dict) -> None:
    assert big.keys() == accumulated.keys()
    moved = max((big[k].float() - start[k].float()).abs().max().item() for k in big if k in start)
    differ = max((big[k].float() - accumulated[k].float()).abs().max().item() for k in big)
    assert moved > 1e-4  # the steps moved the weights...
    assert differ < 1e-3 * moved, (differ, moved)  # ...and accumulation moved them the same way


@pytest.mark.parametrize("stage", ["sft", "rm", "dpo"])
def test_supervised_stages_accumulate_like_one_big_batch(stage, tiny_model_dir, toy_data, tmp_path):
    config_class, runner, data = {"sft": (SFTConfig, sft.run, "demos"), "rm": (RewardConfig, reward.run, "pairs"),
                                  "dpo": (DPOConfig, dpo.run, "pairs")}[stage]
    weights = {}
    for size, accumulation in (BIG, ACCUMULATED):
        out = tmp_path / f"{size}x{accumulation}"
        config = parse_config(config_class, [
            "--model_name_or_path", str(tiny_model_dir), "--train_file", str(toy_data[data]), "--output_dir", str(out),
            "--per_device_train_batch_size", str(size), "--gradient_accumulation_steps", str(accumulation),
            "--max_steps", "2", "--eval_fraction", "0", "--group_by_length", "false", "--disable_tqdm", "true",
            "--report_to", "none", *OPTIMIZER])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            runner(config)
        weights[accumulation] = load_file(out / "model" / "model.safetensors")
    assert_same_steps(load_file(Path(tiny_model_dir) / "model.safetensors"), weights[1], weights[4])


def test_ppo_update_accumulates_like_one_big_minibatch(tiny_model_dir, toy_data, monkeypatch):
    """The same rollout (fixed-length responses, so every token mean is over equal counts), two PPO
    epochs of one minibatch of 8: one pass of 8 and 4 accumulated passes of 2 leave the same weights."""
    import copy

    from rlhf.trainers.optim import NonFiniteGuard, make_optimizer, make_scheduler
    from rlhf.trainers.ppo import ppo_update
    from rlhf.trainers.setup import make_accelerator

    monkeypatch.syspath_prepend(str(TESTS))
    model, exp = fixed_length_experience(tiny_model_dir, toy_data)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    weights = {}
    for size, accumulation in (BIG, ACCUMULATED):
        config = ppo_config(tiny_model_dir, toy_data, "--per_device_train_batch_size", size,
                            "--gradient_accumulation_steps", accumulation, "--ppo_epochs", 2, *OPTIMIZER)
        trained = copy.deepcopy(model)
        optimizer = make_optimizer(trained.parameters(), config)
        scheduler = make_scheduler(optimizer, config, 2)
        torch.manual_seed(0)  # the same minibatch order
        stats = ppo_update(trained, optimizer, scheduler, exp, config, make_accelerator(config), NonFiniteGuard(), 1)
        assert torch.isfinite(stats["loss/value"]) and stats["policy/clipfrac"] >= 0
        weights[accumulation] = trained.state_dict()
    assert_same_steps(start, weights[1], weights[4])


