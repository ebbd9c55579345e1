"""Gao et al. 2023 ("Scaling Laws for Reward Model Overoptimization", arXiv:2210.10760): the gold
reward of a policy optimised against a proxy reward model, as a function of how far it moved,
d = sqrt(KL(pi || pi_init)), measured from the initial policy's gold R(0):

    best-of-n:  R_bon(d) = d (alpha - beta d)        (their eq. 1)
    RL:         R_RL(d)  = d (alpha - beta log d)    (their eq. 2)

Both are linear in (alpha, beta), so each fit is one least-squares solve without an intercept
(R(0) = 0 by construction). Also here: the unbiased best-of-n estimator from N >= n samples per
prompt (Gao et al. appendix; Nakano et al. 2021), so one batch of N = 256 samples gives every
n = 1, 2, 4, ..., 256 point of the best-of-n curve.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import torch

FORMS = ("bon", "rl")


@dataclass
class GaoFit:
    """One fitted curve: R(d) = d (alpha - beta d) for ``bon``, d (alpha - beta log d) for ``rl``."""

    form: str
    alpha: float
    beta: float
    r2: float  # 1 - SS_res / SS_tot, SS_tot about the mean of the fitted values R
    residual_std: float  # sqrt(SS_res / (points - 2)); 0 with two points
    points: int

    def predict(self, d: float) -> float:
        return gao_curve(self.form, d, self.alpha, self.beta)

    def peak_d(self) -> float | None:
        """Where the fitted gold peaks: d* = alpha / (2 beta) (bon) or exp(alpha / beta - 1) (rl);
        None when beta <= 0 (no peak: the curve still rises at every d). A beta at the least-squares
        solver's rounding level (1e-16 where the exact fit is 0) is 0, not a peak at d = 1e15."""
        if self.beta <= 1e-12 * max(abs(self.alpha), 1.0):
            return None
        if self.form == "bon":
            return self.alpha / (2 * self.beta)
        return math.exp(min(self.alpha / self.beta - 1, 700.0))

    def to_dict(self) -> dict:
        return {**asdict(self), "peak_d": self.peak_d()}


def gao_features(form: str, d: torch.Tensor) -> torch.Tensor:
    """Columns multiplying (alpha, beta): (d, -d^2) for bon, (d, -d log d) for rl; (P, 2)."""
    if form == "bon":
        return torch.stack([d, -d * d], dim=1)
    if form == "rl":
        d_log_d = torch.where(d > 0, d * torch.log(d.clamp(min=1e-300)), torch.zeros_like(d))  # d log d -> 0 at 0
        return torch.stack([d, -d_log_d], dim=1)
    raise ValueError(f"unknown Gao form {form!r}; choose one of {', '.join(FORMS)}")


def gao_curve(form: str, d: float, alpha: float, beta: float) -> float:
    """R(d) of the named form."""
    features = gao_features(form, torch.tensor([float(d)], dtype=torch.float64))[0]
    return float(alpha * features[0] + beta * features[1])


def fit_gao(form: str, d: Sequence[float], reward: Sequence[float]) -> GaoFit:
    """Least-squares (alpha, beta) of ``reward`` (already relative to R(0)) against ``d``.
    Needs at least two points with d > 0 (the d = 0 point carries no information: R(0) = 0)."""
    d_t = torch.tensor([float(x) for x in d], dtype=torch.float64)  # (P,)
    y = torch.tensor([float(x) for x in reward], dtype=torch.float64)  # (P,)
    if d_t.shape != y.shape:
        raise ValueError(f"got {d_t.numel()} distances but {y.numel()} rewards")
    if (d_t < 0).any():
        raise ValueError("d = sqrt(KL) cannot be negative")
    if int((d_t > 0).sum()) < 2:
        raise ValueError(f"a Gao fit needs at least two points with d > 0, got {int((d_t > 0).sum())}")
    X = gao_features(form, d_t)  # (P, 2)
    coef = torch.linalg.lstsq(X, y.unsqueeze(1)).solution.squeeze(1)  # (2,)
    residuals = y - X @ coef  # (P,)
    ss_res = float((residuals ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0)
    dof = y.numel() - 2
    return GaoFit(form, float(coef[0]), float(coef[1]), r2, math.sqrt(ss_res / dof) if dof > 0 else 0.0, y.numel())


def best_of_n_expectation(proxy: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    """Expected ``values`` of the sample the proxy picks as best of n, per prompt, estimated
    without bias from N >= n samples per prompt: (P, N), (P, N) -> (P,).

    With the N samples sorted by proxy ascending, the i-th (1-based) is the best of a random
    n-subset in C(i-1, n-1) of the C(N, n) subsets, so
        E[value of best of n] = sum_i C(i-1, n-1) / C(N, n) * value_(i).
    Ties in the proxy are broken by position (scores of sampled texts rarely tie)."""
    if proxy.shape != values.shape or proxy.dim() != 2:
        raise ValueError(f"proxy and values must both be (P, N), got {tuple(proxy.shape)} and {tuple(values.shape)}")
    N = proxy.shape[1]
    if not 1 <= n <= N:
        raise ValueError(f"best-of-{n} needs 1 <= n <= N = {N} samples per prompt")
    order = torch.sort(proxy.double(), dim=1, stable=True).indices  # (P, N) ascending
    sorted_values = torch.gather(values.double(), 1, order)  # (P, N)
    i = torch.arange(1, N + 1, dtype=torch.float64)  # (N,)
    # log C(i-1, n-1) - log C(N, n), zero weight where i < n
    log_w = (torch.lgamma(i) - torch.lgamma(torch.tensor(float(n))) - torch.lgamma((i - n + 1).clamp(min=1))
             - (math.lgamma(N + 1) - math.lgamma(n + 1) - math.lgamma(N - n + 1)))
    weights = torch.where(i >= n, log_w.exp(), torch.zeros_like(i))  # (N,), sums to 1
    return sorted_values @ weights  # (P,)
