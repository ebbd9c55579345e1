"""Several rewards at once, each with a weight: score = sum_k w_k r_k (TRL's ``reward_funcs`` with
``reward_weights``). Used by GRPO, where a task is often judged by a correctness reward and a format
reward together. Unlike an ensemble (ensemble.py), whose members estimate the same reward and are
combined conservatively, these are different rewards and are added."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor

from rlhf.rollout.generation import Rollout


def weighted_sum(scores: Tensor, weights: Sequence[float]) -> Tensor:
    """sum_k w_k r_k over the K rewards: (K, B) -> (B,)."""
    if scores.dim() != 2 or scores.shape[0] != len(weights):
        raise ValueError(f"scores must be (K, B) with K = {len(weights)} weights, got {tuple(scores.shape)}")
    return (torch.tensor(weights, dtype=scores.dtype, device=scores.device)[:, None] * scores).sum(0)  # (B,)


class WeightedRewards:
    """Reward scorers (RewardModelScorer, FunctionScorer), their names and weights, called as one scorer.
    ``last`` keeps each reward's scores of the latest call, (K, B), for per-reward metrics."""

    stats = None  # no single reward model's saved statistics

    def __init__(self, scorers: Sequence, names: Sequence[str], weights: Sequence[float]):
        if not (len(scorers) == len(names) == len(weights)) or not scorers:
            raise ValueError(f"{len(scorers)} rewards, {len(names)} names and {len(weights)} weights: give one of each")
        self.scorers, self.names, self.weights = list(scorers), list(names), list(weights)
        self.last: Tensor | None = None

    def __call__(self, rollout: Rollout, prompts: list[str], responses: list[str], raw_prompts: Sequence | None = None,
                 fields: Sequence[Mapping] | None = None) -> Tensor:
        self.last = torch.stack([scorer(rollout, prompts, responses, raw_prompts, fields).float()
                                 for scorer in self.scorers])  # (K, B)
        return weighted_sum(self.last, self.weights)  # (B,)
