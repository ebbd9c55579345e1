"""How good is a reward model on held-out comparisons: accuracy, margins, calibration, and the
statistics of its scores that PPO uses to normalise them.

The model functions run under ``accelerate`` (each process scores its share; results are gathered
in order); ``summarize_margins`` and ``pairwise_calibration`` are pure functions of the margins.
"""

from __future__ import annotations

import math

import torch

from rlhf.data import collate_pairs
from rlhf.progress import phase_bar


@torch.no_grad()
def pair_rewards(model, pairs: list[dict], pad_id: int, batch_size: int, accelerator, progress: str = "") -> torch.Tensor:
    """(N, 2) rewards of [chosen, rejected] for every tokenized pair, gathered from all processes in order.
    ``progress``: a description to show a progress bar under (on the main process); empty: none."""
    was_training = model.training
    model.eval()
    n_proc, rank = accelerator.num_processes, accelerator.process_index
    padded = math.ceil(len(pairs) / (batch_size * n_proc)) * batch_size * n_proc
    out = []
    for start in phase_bar(range(0, padded, batch_size * n_proc), progress, f"{len(pairs)} pairs",
                           bool(progress) and accelerator.is_main_process):
        first = start + rank * batch_size  # the last batch repeats the last pair; the extra rows are cut below
        mine = [pairs[min(i, len(pairs) - 1)] for i in range(first, first + batch_size)]
        batch = collate_pairs(mine, pad_id)
        input_ids = batch["input_ids"].to(accelerator.device)  # (2b, T): [chosen; rejected]
        attention_mask = batch["attention_mask"].to(accelerator.device)
        chosen, rejected = model(input_ids, attention_mask).chunk(2)  # (b,), (b,)
        out.append(accelerator.gather(torch.stack([chosen, rejected], dim=1)))  # (n_proc * b, 2)
    model.train(was_training)
    gathered = torch.cat(out).view(-1, n_proc, batch_size, 2)  # (steps, n_proc, b, 2)
    return gathered.reshape(-1, 2)[: len(pairs)]


def reward_margins(model, pairs: list[dict], pad_id: int, batch_size: int, accelerator, progress: str = ""
                   ) -> torch.Tensor:
    """r_chosen - r_rejected of every pair: (N,), on the CPU."""
    rewards = pair_rewards(model, pairs, pad_id, batch_size, accelerator, progress)
    return (rewards[:, 0] - rewards[:, 1]).cpu()  # (N,)


def reward_statistics(model, pairs: list[dict], pad_id: int, batch_size: int, accelerator, progress: str = ""
                      ) -> dict[str, float]:
    """Mean and std of the reward over the responses of ``pairs`` (chosen and rejected alike)."""
    rewards = pair_rewards(model, pairs, pad_id, batch_size, accelerator, progress).flatten().double()
    return {"mean": rewards.mean().item(), "std": rewards.std().item(), "count": rewards.numel()}


def summarize_margins(margins: torch.Tensor, num_bins: int) -> tuple[dict[str, float], list[dict]]:
    """Held-out pairwise accuracy with its standard error, mean margin, and calibration."""
    accuracy = (margins > 0).double().mean().item()
    stderr = math.sqrt(accuracy * (1 - accuracy) / max(1, margins.numel()))
    table, ece = pairwise_calibration(margins, num_bins)
    metrics = {"eval/accuracy": accuracy, "eval/accuracy_stderr": stderr, "eval/margin": margins.mean().item(),
               "eval/calibration_error": ece}
    return metrics, table


def pairwise_calibration(reward_margins: torch.Tensor, num_bins: int = 5) -> tuple[list[dict], float]:
    """Does P(chosen) = sigma(r_c - r_r) match how often the model is right?

    Bins the model's confidence max(p, 1-p), p = sigma(r_chosen - r_rejected), over [0.5, 1] and
    compares each bin's mean confidence with its observed accuracy (the fraction with r_c > r_r).
    Returns the table (one dict per non-empty bin) and the expected calibration error
    (count-weighted mean |confidence - accuracy|, Guo et al. 2017)."""
    p_chosen = torch.sigmoid(reward_margins.double())  # (N,)
    confidence = torch.maximum(p_chosen, 1 - p_chosen)
    correct = (reward_margins > 0).double()
    edges = torch.linspace(0.5, 1.0, num_bins + 1, dtype=torch.float64)
    bin_of = torch.bucketize(confidence, edges[1:-1], right=True)  # (N,) in [0, num_bins)
    table, ece = [], 0.0
    for b in range(num_bins):
        in_bin = bin_of == b
        n = int(in_bin.sum())
        if n == 0:
            continue
        conf, acc = confidence[in_bin].mean().item(), correct[in_bin].mean().item()
        table.append({"bin": f"{edges[b]:.2f}-{edges[b + 1]:.2f}", "count": n, "confidence": conf, "accuracy": acc})
        ece += n * abs(conf - acc)
    return table, ece / max(1, reward_margins.numel())
