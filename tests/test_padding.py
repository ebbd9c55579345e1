"""Padding never reaches the numbers: whatever a padded position holds (1e4, inf, NaN), every masked
function gives exactly what it gives with zeros there, and so does its gradient.

The bug this guards: k3 = exp(log r) - 1 - log r on a padded log r above ~88 nats overflows float32 to
inf, a mask multiplied afterwards makes inf * 0 = NaN, and GAE's recursion spreads it to the batch."""

import math

import pytest
import torch

from rlhf.losses import ppo_policy_loss, ppo_value_loss
from rlhf.rl_math import (
    explained_variance,
    gae,
    kl_penalized_rewards,
    masked_mean,
    masked_var,
    masked_whiten,
    select,
)
from rlhf.rollout.logprobs import entropy_from_logits

# Ragged right-padded rows of lengths 3, 2, 1; padding at (1, 2), (2, 1), (2, 2).
MASK = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0]], dtype=torch.float32)
PAD = MASK == 0
EXTREMES = [1e4, -1e4, math.inf, -math.inf, math.nan]


def padded(values, fill):
    """`values` (B, T) float32 with `fill` written at every padded position."""
    x = torch.tensor(values, dtype=torch.float32)
    return x.masked_fill(PAD, fill)


LOGP = [[-1.0, -2.0, -1.0], [-1.0, -1.0, 0.0], [-2.0, 0.0, 0.0]]
REF = [[-1.5, -1.5, -1.0], [-2.0, -1.0, 0.0], [-1.0, 0.0, 0.0]]
X = [[1.0, 2.0, 3.0], [4.0, 5.0, 0.0], [6.0, 0.0, 0.0]]


def assert_same(a, b):
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # identical, NaN included


def test_select_zeroes_inf_and_nan():
    x = torch.tensor([1.0, math.inf, math.nan, -math.inf])
    assert select(x, torch.tensor([1, 0, 0, 0])).tolist() == [1.0, 0.0, 0.0, 0.0]
    assert (x * torch.tensor([1.0, 0.0, 0.0, 0.0])).isnan().any()  # what multiplying would give


@pytest.mark.parametrize("fill", EXTREMES)
def test_masked_statistics_ignore_padding(fill):
    x, zeros = padded(X, fill), padded(X, 0.0)
    assert_same(masked_mean(x, MASK), masked_mean(zeros, MASK))
    assert masked_mean(zeros, MASK).item() == pytest.approx(21 / 6)  # (1 + 2 + 3 + 4 + 5 + 6) / 6
    assert_same(masked_mean(x, MASK, dim=1), masked_mean(zeros, MASK, dim=1))
    assert_same(masked_var(x, MASK), masked_var(zeros, MASK))
    assert_same(masked_whiten(x, MASK), masked_whiten(zeros, MASK))
    assert_same(masked_whiten(x, MASK, shift_mean=False), masked_whiten(zeros, MASK, shift_mean=False))
    assert_same(explained_variance(x, padded(LOGP, fill), MASK), explained_variance(zeros, padded(LOGP, 0.0), MASK))
    assert torch.isfinite(masked_whiten(x, MASK)).all()


@pytest.mark.parametrize("fill", EXTREMES)
def test_masked_mean_gradient_is_zero_on_padding(fill):
    x = padded(X, fill).requires_grad_()
    masked_mean(x, MASK).backward()
    assert_same(x.grad, MASK / 6)


@pytest.mark.parametrize("estimator", ["k1", "k3"])
@pytest.mark.parametrize("fill", EXTREMES)
def test_kl_penalized_rewards_and_gae_ignore_padding(estimator, fill):
    # A padded log-ratio of 2e4 nats (logprobs = fill, ref = -fill): exp() of it is inf in float32.
    scores = torch.tensor([1.0, 2.0, 3.0])
    out = kl_penalized_rewards(scores, padded(LOGP, fill), padded(REF, -fill), MASK, 0.1, estimator)
    expected = kl_penalized_rewards(scores, padded(LOGP, 0.0), padded(REF, 0.0), MASK, 0.1, estimator)
    for got, want in zip(out, expected):
        assert_same(got, want)
        assert torch.isfinite(got).all() and (got[PAD] == 0).all()
    rewards = out[0]
    values = padded([[0.5, 0.6, 0.7], [0.5, 0.6, 0.0], [0.5, 0.0, 0.0]], fill)
    zero_values = padded([[0.5, 0.6, 0.7], [0.5, 0.6, 0.0], [0.5, 0.0, 0.0]], 0.0)
    for got, want in zip(gae(rewards.masked_fill(PAD, fill), values, MASK, 1.0, 0.95),
                         gae(rewards, zero_values, MASK, 1.0, 0.95)):
        assert_same(got, want)
        assert torch.isfinite(got).all()


@pytest.mark.parametrize("fill", EXTREMES)
def test_ppo_losses_and_gradients_ignore_padding(fill):
    advantages = [[1.0, -1.0, 0.5], [-0.5, 2.0, 0.0], [1.5, 0.0, 0.0]]

    def policy(fill):
        logprobs = padded(LOGP, fill).requires_grad_()
        loss, stats = ppo_policy_loss(logprobs, padded(REF, -fill), padded(advantages, fill), MASK, 0.2)
        loss.backward()
        return loss, stats, logprobs.grad

    for got, want in zip(policy(fill), policy(0.0)):
        if isinstance(got, dict):
            for key in got:
                assert_same(got[key], want[key])
        else:
            assert_same(got, want)
            assert torch.isfinite(got).all()

    def value(fill):
        values = padded(X, fill).requires_grad_()
        loss, stats = ppo_value_loss(values, padded(REF, -fill), padded(LOGP, fill), MASK, 0.2)
        loss.backward()
        return loss, stats["vf_clipfrac"], values.grad

    for got, want in zip(value(fill), value(0.0)):
        assert_same(got, want)
        assert torch.isfinite(got).all()


def test_entropy_mean_ignores_padding():
    # Padded positions' logits can be anything; their entropy must not reach the mean.
    logits = torch.zeros(3, 3, 2)  # uniform: H = ln 2 on every real token
    entropy = entropy_from_logits(logits).masked_fill(PAD, math.nan)
    assert masked_mean(entropy, MASK).item() == pytest.approx(math.log(2))
