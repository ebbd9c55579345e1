"""RL math for RLHF, standalone: masked statistics, KL estimators, shaped rewards, GAE.

Pure functions of tensors; nothing here knows about models, devices or logging.
Shapes: B = batch (rollouts), T = response length (right-padded, `mask` marks real tokens).
The implementation details behind each choice are listed in docs/algorithms.md.

Padding never reaches the numbers: inputs are selected with the mask (`torch.where`) before any
arithmetic, never multiplied by it afterwards. A padded position may hold anything (a log-ratio of
1e4 nats, inf, NaN): exp() of it overflows, inf * 0 = NaN, and a NaN spreads through GAE's recursion
and every mean to the whole batch; through a multiplied mask it would also reach the gradients.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


# ---------------------------------------------------------------------------
# Masked statistics
# ---------------------------------------------------------------------------


def select(x: Tensor, mask: Tensor) -> Tensor:
    """`x` where `mask` is nonzero, exactly 0 elsewhere (whatever `x` holds there, inf and NaN included).

    Unlike `x * mask` this gives 0 for inf or NaN on padding, and a zero gradient there too."""
    return torch.where(mask != 0, x, torch.zeros((), dtype=x.dtype, device=x.device))


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of `x` over entries where `mask` is 1 (over `dim`, or all entries when None).

    An empty selection gives 0 rather than NaN (the denominator is clamped to 1).
    """
    x = select(x, mask)  # padding may hold inf or NaN: select before multiplying
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance of `x` over entries where `mask` is 1 (Bessel-corrected when `unbiased`)."""
    mask = mask.to(x.dtype)
    centered = select(x, mask) - masked_mean(x, mask)
    var = masked_mean(centered**2, mask)
    if unbiased:
        n = mask.sum()
        if n < 2:
            raise ValueError(
                f"masked_var(unbiased=True) needs at least 2 unmasked entries, got {int(n.item())}; "
                "use a larger batch for whitening"
            )
        var = var * n / (n - 1)
    return var


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True) -> Tensor:
    """Normalise `x` to unit variance over masked entries; zero on padding.

    shift_mean=True  -> mean 0, variance 1 (advantages, lm-human-preferences `whiten`).
    shift_mean=False -> variance 1 but the original mean is added back, so the sign of the
    average reward is kept (TRL's `whiten_rewards`; see docs/algorithms.md).
    """
    x = select(x, mask)
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return select(whitened, mask)


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
    """1 - Var[returns - values] / Var[returns] over masked entries (NaN if Var[returns] == 0).

    1 is a perfect value function, 0 is no better than predicting the mean, < 0 is worse.
    """
    returns, values = select(returns, mask), select(values, mask)
    var_returns = masked_var(returns, mask, unbiased=False)
    return 1 - masked_var(returns - values, mask, unbiased=False) / var_returns


# ---------------------------------------------------------------------------
# KL estimators (Schulman, "Approximating KL divergence", http://joschu.net/blog/kl-approx.html)
# Samples come from the policy, so for KL[pi || pi_ref] with log r = ref_logp - logp:
#   k1 = -log r            unbiased, high variance, can be negative per token
#   k3 = (r - 1) - log r   unbiased, low variance, always >= 0
# ---------------------------------------------------------------------------


def kl_k1(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Per-token k1 estimate logp - ref_logp, the one lm-human-preferences uses."""
    return logprobs - ref_logprobs  # (B, T)


def kl_k3(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Per-token k3 estimate (r - 1) - log r with log r = ref_logp - logp; always >= 0."""
    log_r = ref_logprobs - logprobs  # (B, T)
    return torch.expm1(log_r) - log_r  # (B, T)


KL_ESTIMATORS = {"k1": kl_k1, "k3": kl_k3}


def kl_estimate(logprobs: Tensor, ref_logprobs: Tensor, estimator: str) -> Tensor:
    """Per-token KL[pi || pi_ref] estimate with the named estimator ("k1" or "k3")."""
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {estimator!r}; choose one of {sorted(KL_ESTIMATORS)}")
    return KL_ESTIMATORS[estimator](logprobs, ref_logprobs)  # (B, T)


# ---------------------------------------------------------------------------
# Shaped rewards and advantages
# ---------------------------------------------------------------------------


def kl_penalized_rewards(
    scores: Tensor,
    logprobs: Tensor,
    ref_logprobs: Tensor,
    mask: Tensor,
    kl_coef: float,
    estimator: str = "k1",
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-token rewards r_t = -kl_coef * KL_t, plus the reward-model score on the last response token.

    Ziegler et al. 2019, eq. (2): R(x, y) = r(x, y) - beta * log(pi(y|x) / rho(y|x)), spread over tokens as in
    lm-human-preferences `train_policy.py`:
        kl = logprobs - ref_logprobs; non_score_reward = -kl_ctl.value * kl; rewards[:, -1] += scores
    except that responses are right-padded, so the score goes on each row's last 1 in `mask`,
    and every tensor is zero on padding: the log-probs are selected with the mask BEFORE the estimator,
    since k3 = exp(log r) - 1 - log r overflows float32 for a padded log r above ~88 nats.

    Returns (rewards, non_score_reward, kl), each (B, T).
    """
    if not (logprobs.shape == ref_logprobs.shape == mask.shape) or logprobs.dim() != 2:
        raise ValueError(
            f"logprobs, ref_logprobs and mask must all be (B, T); got {tuple(logprobs.shape)}, "
            f"{tuple(ref_logprobs.shape)}, {tuple(mask.shape)}"
        )
    if scores.shape != logprobs.shape[:1]:
        raise ValueError(f"scores must be (B,) = {tuple(logprobs.shape[:1])}, got {tuple(scores.shape)}")
    mask = mask.to(logprobs.dtype)
    if (mask.sum(1) == 0).any():
        raise ValueError("every row of mask needs at least one response token to carry its score")
    B, T = mask.shape

    logprobs, ref_logprobs = select(logprobs, mask), select(ref_logprobs, mask)  # (B, T), 0 on padding
    kl = select(kl_estimate(logprobs, ref_logprobs, estimator), mask)  # (B, T)
    non_score_reward = -kl_coef * kl  # (B, T)
    positions = torch.arange(T, device=mask.device)  # (T,)
    last = (mask * positions).argmax(dim=1)  # (B,) index of the last response token
    rewards = non_score_reward.clone()  # (B, T)
    rewards[torch.arange(B, device=mask.device), last] += scores.to(rewards.dtype)
    return rewards, non_score_reward, kl


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalized Advantage Estimation (Schulman et al. 2016, arXiv:1506.02438, eq. 16).

        delta_t = r_t + gamma * V_{t+1} - V_t
        A_t     = delta_t + gamma * lam * A_{t+1}
        returns = A + V

    The episode ends at each row's last response token: values and advantages beyond it count as 0.
    `mask` must be contiguous within a row (right- or left-padded). Returns (advantages, returns),
    each (B, T), zero on padding. Vectorised over B; one backward loop over T.
    """
    if not (rewards.shape == values.shape == mask.shape) or rewards.dim() != 2:
        raise ValueError(
            f"rewards, values and mask must all be (B, T); got {tuple(rewards.shape)}, "
            f"{tuple(values.shape)}, {tuple(mask.shape)}"
        )
    values = select(values, mask)  # (B, T) padding counts as terminal, V = 0
    rewards = select(rewards, mask)  # (B, T)
    mask = mask.to(values.dtype)
    T = rewards.shape[1]

    advantages = torch.zeros_like(rewards)  # (B, T)
    next_value = torch.zeros_like(rewards[:, 0])  # (B,)
    lastgaelam = torch.zeros_like(rewards[:, 0])  # (B,)
    for t in reversed(range(T)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]  # (B,)
        lastgaelam = (delta + gamma * lam * lastgaelam) * mask[:, t]  # (B,) reset on padding
        advantages[:, t] = lastgaelam
        next_value = values[:, t]
    returns = select(advantages + values, mask)  # (B, T)
    return advantages, returns


# ---------------------------------------------------------------------------
# Reward normalisation
# ---------------------------------------------------------------------------


class RunningMoments:
    """Running mean / std of every score seen, merged batch by batch (Chan et al. 1979 parallel algorithm).

    State is three plain numbers so a checkpoint can store it as JSON.
    """

    def __init__(self) -> None:
        self.mean = 0.0
        self.var = 1.0  # population variance of all values seen (irrelevant while count == 0)
        self.count = 0

    @property
    def std(self) -> float:
        """Unbiased standard deviation of all values seen (1.0 before two values arrive)."""
        if self.count < 2:
            return 1.0
        return math.sqrt(self.var * self.count / (self.count - 1))

    def update(self, x: Tensor) -> tuple[float, float]:
        """Merge the batch `x` (any shape) into the running moments; returns the batch's (mean, std)."""
        x = x.detach().double().flatten()
        n_b = x.numel()
        if n_b == 0:
            raise ValueError("RunningMoments.update needs a non-empty batch")
        mean_b, var_b = x.mean().item(), x.var(unbiased=False).item()
        n = self.count + n_b
        delta = mean_b - self.mean
        m2 = self.var * self.count + var_b * n_b + delta**2 * self.count * n_b / n
        self.mean += delta * n_b / n
        self.var = m2 / n
        self.count = n
        std_b = math.sqrt(var_b * n_b / (n_b - 1)) if n_b > 1 else 0.0
        return mean_b, std_b

    def state_dict(self) -> dict:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.var, self.count = float(state["mean"]), float(state["var"]), int(state["count"])


def normalize_scores(scores: Tensor, mean: float, std: float, clip: float | None = None) -> Tensor:
    """(scores - mean) / std, then clipped to [-clip, clip] when `clip` is given."""
    if not std > 0:
        raise ValueError(f"normalize_scores needs std > 0, got {std}")
    normalized = (scores - mean) / std  # (B,)
    if clip is not None:
        normalized = normalized.clamp(-clip, clip)
    return normalized


# ---------------------------------------------------------------------------
# Critic-free advantages (GRPO, Dr. GRPO, RLOO, REINFORCE++)
# `scores` is (B,) with B = num_prompts * G: the G responses to one prompt are contiguous,
# scores[p * G:(p + 1) * G]. A sequence-level advantage (B,) is the same for every token of its
# response; the REINFORCE++ forms are per token, (B, T).
# ---------------------------------------------------------------------------


def group_scores(scores: Tensor, num_generations: int) -> Tensor:
    """(B,) -> (B / G, G): one row per prompt, its G responses' scores in order."""
    if scores.dim() != 1 or num_generations < 1 or scores.numel() % num_generations:
        raise ValueError(f"scores must be (num_prompts * G,) with G = {num_generations}, got {tuple(scores.shape)}")
    return scores.view(-1, num_generations)  # (P, G)


def grpo_advantages(scores: Tensor, num_generations: int, scale_rewards: str = "group", eps: float = 1e-4) -> Tensor:
    """GRPO (Shao et al. 2024, arXiv:2402.03300, section 4.1.2, outcome supervision):

        A_i = (r_i - mean_g r) / (std_g r + eps)     over the G responses g to the same prompt

    std is the unbiased one and eps = 1e-4, as in TRL. scale_rewards: "group" (above), "batch" (divide by
    the std of all B scores instead, TRL >= 0.22), "none" (no division: Dr. GRPO). A group whose rewards are
    all equal gets A = 0 whatever the scaling: it carries no signal (see frac_reward_zero_std)."""
    grouped = group_scores(scores, num_generations)  # (P, G)
    centered = (grouped - grouped.mean(1, keepdim=True)).flatten()  # (B,)
    if scale_rewards == "group":
        std = grouped.std(1, keepdim=True).expand_as(grouped).flatten() if num_generations > 1 else torch.zeros_like(
            centered)  # (B,)
    elif scale_rewards == "batch":
        std = scores.std() if scores.numel() > 1 else torch.zeros((), dtype=scores.dtype)
    elif scale_rewards == "none":
        return centered
    else:
        raise ValueError(f"scale_rewards must be group, batch or none, got {scale_rewards!r}")
    return centered / (std + eps)


def dr_grpo_advantages(scores: Tensor, num_generations: int) -> Tensor:
    """Dr. GRPO (Liu et al. 2025, arXiv:2503.20783, "GRPO done right"): A_i = r_i - mean_g r.

    Dividing by the group's std weights prompts that are nearly always solved (or never) the most;
    without it every group counts by its rewards' spread."""
    return grpo_advantages(scores, num_generations, scale_rewards="none")


def rloo_advantages(scores: Tensor, num_generations: int) -> Tensor:
    """RLOO (Ahmadian et al. 2024, arXiv:2402.14740, eq. 5; Kool et al. 2019): the baseline of each
    response is the mean of the OTHER G - 1 responses to its prompt, so it is independent of the sample:

        A_i = r_i - (1 / (G - 1)) sum_{j != i} r_j = G / (G - 1) * (r_i - mean_g r)"""
    if num_generations < 2:
        raise ValueError("RLOO needs at least 2 responses per prompt (num_generations >= 2)")
    grouped = group_scores(scores, num_generations)  # (P, G)
    others = (grouped.sum(1, keepdim=True) - grouped) / (num_generations - 1)  # (P, G)
    return (grouped - others).flatten()  # (B,)


def reverse_cumsum(rewards: Tensor, mask: Tensor) -> Tensor:
    """Returns-to-go with gamma = 1: G_t = sum_{s >= t} r_s within each row, 0 on padding."""
    rewards = select(rewards, mask)  # (B, T)
    return select(rewards.flip(1).cumsum(1).flip(1), mask)  # (B, T)


def reinforce_pp_advantages(scores: Tensor, logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor, kl_coef: float,
                            estimator: str = "k1") -> Tensor:
    """REINFORCE++ (Hu et al. 2025, arXiv:2501.03262, eqs. 2-4; OpenRLHF `reinforce`):

        r_t = -beta * KL_t  (+ the score at the last response token)    per-token KL-shaped reward
        G_t = sum_{s >= t} r_s                                           returns, gamma = 1
        A_t = (G_t - mean G) / std G                                     whitened over the batch's tokens

    No critic and no groups: the batch statistics are the baseline. Returns (B, T), 0 on padding."""
    rewards, _, _ = kl_penalized_rewards(scores, logprobs, ref_logprobs, mask, kl_coef, estimator)  # (B, T)
    return masked_whiten(reverse_cumsum(rewards, mask), mask)


def reinforce_pp_baseline_advantages(scores: Tensor, num_generations: int, logprobs: Tensor, ref_logprobs: Tensor,
                                     mask: Tensor, kl_coef: float, estimator: str = "k1") -> Tensor:
    """REINFORCE++-baseline (Hu et al. 2025, section 3; OpenRLHF `reinforce_baseline`): each score minus its
    group's mean first (which removes the prompt's difficulty), then REINFORCE++ on those scores. Returns (B, T)."""
    centered = dr_grpo_advantages(scores, num_generations)  # (B,)
    return reinforce_pp_advantages(centered, logprobs, ref_logprobs, mask, kl_coef, estimator)


def frac_zero_std_groups(scores: Tensor, num_generations: int) -> Tensor:
    """Fraction of prompts whose G rewards are all equal: their group-relative advantages are 0, no signal."""
    grouped = group_scores(scores, num_generations)  # (P, G)
    return (grouped.max(1).values == grouped.min(1).values).float().mean()
