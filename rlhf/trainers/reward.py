"""Stage 2: the reward model (InstructGPT section 3.5, "RM").

A backbone initialised from the SFT model with a scalar head read at the last real token,
trained on pairwise comparisons with the Bradley-Terry loss -log sigma(r_chosen - r_rejected).
Chosen and rejected responses of a batch go through the backbone in one forward pass.
"""

from __future__ import annotations

import math
import warnings

import torch

from rlhf.config.reward import RewardConfig
from rlhf.data import collate_pairs, load_comparisons, tokenize_comparisons
from rlhf.evaluation.calibration import pairwise_calibration
from rlhf.losses import pairwise_rm_loss
from rlhf.models.loading import load_tokenizer, training_stage_of
from rlhf.models.scalar_model import REWARD_STATS_FILE, ScalarModel
from rlhf.trainers.common import (
    finish_run, holdout_split, make_accelerator, prepare_output_dir, seed_everything, to_device,
)
from rlhf.trainers.loop import SupervisedRun

CONFIG_CLASS = RewardConfig
# InstructGPT and the seed's advice: a reward model much larger than its data over-fits.
MIN_PAIRS_FOR_LARGE_MODEL, LARGE_MODEL_PARAMS = 5000, 100_000_000


def run(config: RewardConfig) -> dict:
    accelerator = make_accelerator(config)
    seed_everything(config.seed)
    prepare_output_dir(config, accelerator)
    tokenizer = load_tokenizer(config.model_name_or_path, trust_remote_code=config.trust_remote_code)
    model = ScalarModel.from_pretrained(config.model_name_or_path, tokenizer, trust_remote_code=config.trust_remote_code)

    # 1. Data: comparisons (rankings expand to K(K-1)/2 pairs) -> token ids, with per-pair weights.
    train_pairs, eval_pairs = _load_pairs(config, tokenizer)
    _warn_common_mistakes(config, model, len(train_pairs), accelerator)
    weights_by_labeler = config.parsed_labeler_weights()
    pad_id = tokenizer.pad_token_id
    lengths = [len(x["prompt_ids"]) + max(len(x["chosen_ids"]), len(x["rejected_ids"])) for x in train_pairs]
    run_ = SupervisedRun.start(config, accelerator, model, lengths, "rm",
                               postfix_keys=("loss/rm", "rm/accuracy", "eval/accuracy"))
    model = run_.model

    # 2. Train: one forward pass over [chosen; rejected], Bradley-Terry on the reward difference.
    def compute_loss(batch_indices: list[int]):
        batch = to_device(collate_pairs([train_pairs[i] for i in batch_indices], pad_id,
                                        labeler_weights=weights_by_labeler or None), accelerator.device)
        rewards = model(batch["input_ids"], batch["attention_mask"])  # (2B,)
        chosen_rewards, rejected_rewards = rewards.chunk(2)  # (B,), (B,)
        loss, stats = pairwise_rm_loss(chosen_rewards, rejected_rewards,
                                       margin=batch["margin"] if config.use_margin else None,
                                       center_coef=config.center_rewards_coefficient, weights=batch.get("weights"))
        return loss, {"rm/accuracy": stats["accuracy"], "rm/margin": stats["margin"]}

    step = run_.train(compute_loss, "rm").step

    # 3. Held-out accuracy, margin and calibration; reward statistics for PPO's normalisation.
    summary = {"stage": "rm", "steps": step, "train_pairs": len(train_pairs), "eval_pairs": len(eval_pairs)}
    if eval_pairs:
        margins = reward_margins(model, eval_pairs, pad_id, config.per_device_train_batch_size, accelerator)
        eval_metrics, calibration = summarize_margins(margins, config.calibration_bins)
        run_.logger.log(step, eval_metrics)
        summary.update(eval_metrics)
        summary["calibration"] = calibration
    stats = reward_statistics(model, train_pairs[: config.stats_max_pairs], pad_id,
                              config.per_device_train_batch_size, accelerator)
    summary["reward_mean"], summary["reward_std"] = stats["mean"], stats["std"]
    return finish_run(model, tokenizer, summary, config, accelerator, run_.logger, "rm",
                      extra_files={REWARD_STATS_FILE: stats})


def _load_pairs(config: RewardConfig, tokenizer) -> tuple[list[dict], list[dict]]:
    def tokenize(path: str) -> list[dict]:
        pairs = load_comparisons(path, tokenizer=tokenizer, skip_bad_records=config.skip_bad_records)
        return tokenize_comparisons(pairs, tokenizer, max_length=config.max_length, truncation=config.truncation,
                                    skip_bad_records=config.skip_bad_records)

    train = tokenize(config.train_file)
    if config.eval_file:
        return train, tokenize(config.eval_file)
    return holdout_split(train, config.eval_fraction, config.seed)


def _warn_common_mistakes(config: RewardConfig, model, num_pairs: int, accelerator) -> None:
    if not accelerator.is_main_process:
        return
    n_params = sum(p.numel() for p in model.parameters())
    if n_params > LARGE_MODEL_PARAMS and num_pairs < MIN_PAIRS_FOR_LARGE_MODEL:
        warnings.warn(f"{num_pairs} comparisons for a reward model of {n_params / 1e6:.0f}M parameters: below "
                      f"{MIN_PAIRS_FOR_LARGE_MODEL} pairs a model over 100M parameters tends to over-fit; collect "
                      "more comparisons or use a smaller backbone", stacklevel=2)
    if training_stage_of(config.model_name_or_path) != "sft":
        warnings.warn(f"{config.model_name_or_path} is not an `rlhf sft` checkpoint: InstructGPT initialises the "
                      "reward model from the SFT model, which has seen the task's responses (ignore this if the "
                      "model was fine-tuned elsewhere)", stacklevel=2)


@torch.no_grad()
def _pair_rewards(model, pairs: list[dict], pad_id: int, batch_size: int, accelerator) -> torch.Tensor:
    """(N, 2) rewards of [chosen, rejected] for every pair, gathered from all processes in order."""
    was_training = model.training
    model.eval()
    n_proc, rank = accelerator.num_processes, accelerator.process_index
    padded = math.ceil(len(pairs) / (batch_size * n_proc)) * batch_size * n_proc
    out = []
    for start in range(0, padded, batch_size * n_proc):
        mine = [pairs[min(i, len(pairs) - 1)] for i in range(start + rank * batch_size, start + (rank + 1) * batch_size)]
        batch = to_device(collate_pairs(mine, pad_id), accelerator.device)
        chosen, rejected = model(batch["input_ids"], batch["attention_mask"]).chunk(2)
        out.append(accelerator.gather(torch.stack([chosen, rejected], dim=1)))  # (n_proc * B, 2)
    model.train(was_training)
    gathered = torch.cat(out).view(-1, n_proc, batch_size, 2)  # (steps, n_proc, B, 2)
    return gathered.reshape(-1, 2)[: len(pairs)]


def reward_margins(model, pairs: list[dict], pad_id: int, batch_size: int, accelerator) -> torch.Tensor:
    rewards = _pair_rewards(model, pairs, pad_id, batch_size, accelerator)
    return (rewards[:, 0] - rewards[:, 1]).cpu()  # (N,)


def summarize_margins(margins: torch.Tensor, num_bins: int) -> tuple[dict[str, float], list[dict]]:
    """Held-out pairwise accuracy with its standard error, mean margin, and calibration."""
    accuracy = (margins > 0).double().mean().item()
    stderr = math.sqrt(accuracy * (1 - accuracy) / max(1, margins.numel()))
    table, ece = pairwise_calibration(margins, num_bins)
    metrics = {"eval/accuracy": accuracy, "eval/accuracy_stderr": stderr, "eval/margin": margins.mean().item(),
               "eval/calibration_error": ece}
    return metrics, table


def reward_statistics(model, pairs: list[dict], pad_id: int, batch_size: int, accelerator) -> dict[str, float]:
    """Mean and std of the reward over the training responses (chosen and rejected alike)."""
    rewards = _pair_rewards(model, pairs, pad_id, batch_size, accelerator).flatten().double()
    return {"mean": rewards.mean().item(), "std": rewards.std().item(), "count": rewards.numel()}
