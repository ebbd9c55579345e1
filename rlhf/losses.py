"""Every loss of the pipeline, as a pure function of tensors: SFT, reward model, DPO family, PPO.

Convention: each loss returns `(loss, stats)` where `loss` is a scalar with a graph and `stats` is a
small dict of detached 0-dim tensors (the caller namespaces them, e.g. `policy/clipfrac`, and calls
`.item()` when it logs). Log-probabilities and entropies of logits live in `rlhf.rollout.logprobs`.
Shapes: B = batch, T = sequence length, V = vocabulary. Per-token losses select their inputs with
`mask` before any arithmetic (`rl_math.select`), so whatever padding holds (inf, NaN) never reaches
the loss or its gradient: exp(log_ratio) of a padded 1e4 would be inf, and inf * 0 = NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rlhf.data.tokenize import IGNORE_INDEX
from rlhf.rl_math import masked_mean, select
from rlhf.rollout.logprobs import token_logprobs


def _check_same_shape(**tensors: Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"shapes must match: {shapes}")


# ---------------------------------------------------------------------------
# Supervised fine-tuning
# ---------------------------------------------------------------------------


def sft_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Next-token cross-entropy: logits[:, t] predicts labels[:, t+1], mean over labels != -100.

    L = -(1/N) sum_{t: y_{t+1} != -100} log p(y_{t+1} | y_<=t). Returns a scalar (0 if nothing to predict).
    """
    if logits.dim() != 3 or logits.shape[:2] != labels.shape:
        raise ValueError(
            f"logits must be (B, T, V) and labels (B, T); got {tuple(logits.shape)}, {tuple(labels.shape)}"
        )
    targets = labels[:, 1:]  # (B, T-1)
    mask = targets != IGNORE_INDEX  # (B, T-1)
    logp = token_logprobs(logits[:, :-1], targets.clamp(min=0))  # (B, T-1)
    return -masked_mean(logp, mask)


# ---------------------------------------------------------------------------
# Reward model
# ---------------------------------------------------------------------------


def pairwise_rm_loss(
    chosen_rewards: Tensor,
    rejected_rewards: Tensor,
    margin: Tensor | None = None,
    center_coef: float = 0.0,
    weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Bradley-Terry reward-model loss with an optional margin and centering term.

    L = sum_i w_i * -log sigma(r_c,i - r_r,i - m_i) / sum_i w_i      (Ouyang et al. 2022 eq. 1; margin m:
                                                                      Llama 2, Touvron et al. 2023 eq. 2)
      + center_coef * mean_i (r_c,i + r_r,i)^2                        (Eisenstein et al. 2023, arXiv:2312.09244 eq. 2)

    The centering term is an unweighted mean; it only pins the reward's offset near zero.
    stats: accuracy = mean[r_c > r_r], margin = mean(r_c - r_r).
    """
    _check_same_shape(chosen_rewards=chosen_rewards, rejected_rewards=rejected_rewards)
    diff = chosen_rewards - rejected_rewards  # (B,)
    logits = diff if margin is None else diff - margin  # (B,)
    losses = -F.logsigmoid(logits)  # (B,)
    if weights is None:
        loss = losses.mean()
    else:
        _check_same_shape(chosen_rewards=chosen_rewards, weights=weights)
        # A batch whose pairs all weigh 0 (e.g. from flagged labelers) teaches nothing: loss 0, not 0/0.
        loss = (weights * losses).sum() / weights.sum().clamp_min(torch.finfo(losses.dtype).tiny)
    if center_coef:
        loss = loss + center_coef * ((chosen_rewards + rejected_rewards) ** 2).mean()
    stats = {"accuracy": (diff > 0).float().mean().detach(), "margin": diff.mean().detach()}
    return loss, stats


# ---------------------------------------------------------------------------
# Direct preference optimisation family
# All take log-probs of whole responses, each (B,); h = (pi_c - pi_r) - (ref_c - ref_r).
# stats: chosen_rewards = mean beta*(pi_c - ref_c), rejected_rewards = mean beta*(pi_r - ref_r),
#        accuracy = mean[chosen reward > rejected reward], margin = mean(chosen - rejected reward).
# ---------------------------------------------------------------------------


def _logratio_h_and_stats(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """h = (pi_c - ref_c) - (pi_r - ref_r), and the implicit-reward stats shared by the DPO family."""
    _check_same_shape(
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        ref_chosen_logps=ref_chosen_logps,
        ref_rejected_logps=ref_rejected_logps,
    )
    chosen_logratio = policy_chosen_logps - ref_chosen_logps  # (B,)
    rejected_logratio = policy_rejected_logps - ref_rejected_logps  # (B,)
    h = chosen_logratio - rejected_logratio  # (B,)
    chosen_rewards = beta * chosen_logratio.detach()  # (B,)
    rejected_rewards = beta * rejected_logratio.detach()  # (B,)
    stats = {
        "chosen_rewards": chosen_rewards.mean(),
        "rejected_rewards": rejected_rewards.mean(),
        "accuracy": (chosen_rewards > rejected_rewards).float().mean(),
        "margin": (chosen_rewards - rejected_rewards).mean(),
    }
    return h, stats


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """DPO, Rafailov et al. 2023 (arXiv:2305.18290) eq. 7: L = -log sigma(beta * h), with summed log-probs.

    label_smoothing eps > 0 gives conservative DPO (Mitchell 2023, https://ericmitchell.ai/cdpo.pdf eq. 3),
    which assumes each label is flipped with probability eps:
        L = -(1 - eps) log sigma(beta * h) - eps log sigma(-beta * h)
    """
    h, stats = _logratio_h_and_stats(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )  # h: (B,)
    losses = (
        -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    )  # (B,)
    return losses.mean(), stats


def ipo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """IPO, Azar et al. 2023 (arXiv:2310.12036v2) eq. 17: L = (h - 1/(2 beta))^2.

    Regresses h onto a fixed target instead of pushing it to infinity. The formula is the same for any
    log-probs, but the usual IPO setup (TRL's `ipo`) passes LENGTH-AVERAGED response log-probs
    (sum over response tokens / number of response tokens), and beta is tuned for that scale:
    divide the summed log-probs by the response lengths before calling.
    """
    h, stats = _logratio_h_and_stats(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )  # h: (B,)
    losses = (h - 1 / (2 * beta)) ** 2  # (B,)
    return losses.mean(), stats


def hinge_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """SLiC-HF rank-calibration hinge (Zhao et al. 2023, arXiv:2305.10425) on the DPO log-ratio h:

        L = max(0, 1 - beta * h) = beta * max(0, 1/beta - h), i.e. SLiC's margin delta is 1/beta.
    """
    h, stats = _logratio_h_and_stats(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )  # h: (B,)
    losses = torch.relu(1 - beta * h)  # (B,)
    return losses.mean(), stats


# ---------------------------------------------------------------------------
# PPO (Schulman et al. 2017, arXiv:1707.06347)
# ---------------------------------------------------------------------------


def aggregate_token_losses(losses: Tensor, mask: Tensor, aggregation: str = "token") -> Tensor:
    """One scalar from per-token losses (B, T):

        token    = sum_{i,t} l_it / sum_i |y_i|        every token weighs the same (TRL's bnpo / dapo, PPO)
        sequence = (1/B) sum_i (1/|y_i|) sum_t l_it    every response weighs the same (TRL's grpo)

    With "sequence" a long response's tokens each count less, which biases toward long wrong answers and
    short right ones (Liu et al. 2025, arXiv:2503.20783, section 3.1)."""
    if aggregation == "token":
        return masked_mean(losses, mask)
    if aggregation == "sequence":
        return masked_mean(losses, mask, dim=1).mean()
    raise ValueError(f"aggregation must be token or sequence, got {aggregation!r}")


def ppo_policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, cliprange: float,
    cliprange_high: float | None = None, aggregation: str = "token",
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped surrogate, PPO eq. 7, as a loss to minimise (masked mean over response tokens):

        ratio   = exp(logprobs - old_logprobs)
        pg_loss = mean max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps_high))

    eps_high = cliprange_high, or cliprange when None (PPO). A larger upper clip lets unlikely tokens with
    a positive advantage gain more per update ("clip-higher", DAPO, Yu et al. 2025, arXiv:2503.14476 eq. 10).
    aggregation: how per-token losses become one number (``aggregate_token_losses``; PPO's is token).

    stats: clipfrac = fraction of tokens where the clipped term is the active one;
    approx_kl = mean((ratio - 1) - log ratio), the k3 estimate of KL[pi_old || pi] from samples of pi_old
    (http://joschu.net/blog/kl-approx.html; cleanrl's `approx_kl`); ratio = mean ratio.
    """
    _check_same_shape(logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages, mask=mask)
    log_ratio = select(logprobs, mask) - select(old_logprobs, mask)  # (B, T), 0 on padding
    advantages = select(advantages, mask)  # (B, T)
    ratio = torch.exp(log_ratio)  # (B, T)
    pg_losses = -advantages * ratio  # (B, T)
    upper = cliprange if cliprange_high is None else cliprange_high
    pg_losses2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + upper)  # (B, T)
    pg_loss = aggregate_token_losses(torch.max(pg_losses, pg_losses2), mask, aggregation)

    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((pg_losses2 > pg_losses).float(), mask),
            "approx_kl": masked_mean((ratio - 1) - log_ratio, mask),
            "ratio": masked_mean(ratio, mask),
        }
    return pg_loss, stats


def ppo_value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, cliprange_value: float | None
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped value loss (OpenAI baselines PPO2, lm-human-preferences `cliprange_value`):

        V_clipped = old_values + clip(values - old_values, -eps, eps)
        vf_loss   = 0.5 * mean max((V - R)^2, (V_clipped - R)^2)

    cliprange_value=None disables clipping (Engstrom et al. 2020 and Andrychowicz et al. 2021 found
    clipping does not help in general; it is kept as the lm-human-preferences default).
    stats: vf_clipfrac = fraction of tokens where the clipped term is the larger.
    """
    _check_same_shape(values=values, old_values=old_values, returns=returns, mask=mask)
    values, old_values, returns = select(values, mask), select(old_values, mask), select(returns, mask)  # (B, T)
    vf_losses1 = (values - returns) ** 2  # (B, T)
    if cliprange_value is None:
        vf_losses2 = vf_losses1
    else:
        values_clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)  # (B, T)
        vf_losses2 = (values_clipped - returns) ** 2  # (B, T)
    vf_loss = 0.5 * masked_mean(torch.max(vf_losses1, vf_losses2), mask)
    stats = {"vf_clipfrac": masked_mean((vf_losses2 > vf_losses1).float(), mask).detach()}
    return vf_loss, stats


def kl_loss_k3(logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor, aggregation: str = "token") -> Tensor:
    """The KL to the reference as a loss term (GRPO, Shao et al. 2024 eq. 4), the k3 estimator per token:

        D_t = pi_ref / pi - log(pi_ref / pi) - 1   >= 0, unbiased for KL[pi || pi_ref] on samples of pi

    Differentiated, its expectation on samples of pi is E[(1 - pi_ref/pi) grad log pi] = grad KL[pi_ref || pi]:
    the forward KL's gradient, not that of the reverse KL it estimates (k1's expected gradient is 0). Both pull
    pi toward pi_ref; that is what GRPO and TRL use. The caller multiplies by beta; aggregated like the policy loss."""
    _check_same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs, mask=mask)
    log_r = select(ref_logprobs, mask) - select(logprobs, mask)  # (B, T), 0 on padding
    return aggregate_token_losses(torch.expm1(log_r) - log_r, mask, aggregation)
