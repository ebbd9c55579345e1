"""How an ensemble of reward models turns its members' scores into one score per response.

Pure functions of a (M, B) tensor: M members, B responses. A policy optimised against one reward
model finds its errors; members trained with different seeds err in different places, so a
conservative aggregate is harder to exploit (Coste et al. 2023, arXiv:2310.02743, "worst-case" and
"uncertainty-weighted" optimisation; Eisenstein et al. 2023, arXiv:2312.09244, mean minus std).
"""

from __future__ import annotations

import torch
from torch import Tensor

AGGREGATIONS = ("mean", "min", "mean_minus_std")


def mean_reward(scores: Tensor) -> Tensor:
    """r = (1/M) sum_m r_m: the plain average of the members, (M, B) -> (B,)."""
    return scores.mean(0)  # (B,)


def worst_case_reward(scores: Tensor) -> Tensor:
    """r = min_m r_m: the most pessimistic member (Coste et al. 2023, WCO), (M, B) -> (B,)."""
    return scores.min(0).values  # (B,)


def uncertainty_penalized_reward(scores: Tensor, coef: float) -> Tensor:
    """r = mean_m r_m - coef * std_m r_m, (M, B) -> (B,).

    The members' disagreement stands for the reward's uncertainty (Eisenstein et al. 2023, "mean
    minus std"). The std is the population one (divide by M), so a one-member ensemble is just
    its member and two members give std = |r_1 - r_2| / 2."""
    if coef < 0:
        raise ValueError(f"the uncertainty coefficient must be >= 0, got {coef}")
    return scores.mean(0) - coef * scores.std(0, correction=0)  # (B,)


def aggregate_rewards(scores: Tensor, aggregation: str = "mean", uncertainty_coef: float = 0.0) -> Tensor:
    """The named aggregation of the members' scores (M, B) -> (B,)."""
    if scores.dim() != 2 or scores.shape[0] == 0:
        raise ValueError(f"member scores must be (M, B) with M >= 1, got {tuple(scores.shape)}")
    if aggregation == "mean":
        return mean_reward(scores)
    if aggregation == "min":
        return worst_case_reward(scores)
    if aggregation == "mean_minus_std":
        return uncertainty_penalized_reward(scores, uncertainty_coef)
    raise ValueError(f"unknown reward aggregation {aggregation!r}; choose one of {', '.join(AGGREGATIONS)}")
