"""Calibration of a pairwise reward model: does P(chosen) = sigma(r_c - r_r) match how often it is right?"""

from __future__ import annotations

import torch


def pairwise_calibration(reward_margins: torch.Tensor, num_bins: int = 5) -> tuple[list[dict], float]:
    """Bin the model's confidence max(p, 1-p), p = sigma(r_chosen - r_rejected), over [0.5, 1] and
    compare each bin's mean confidence with its observed accuracy (the fraction with r_c > r_r).

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
