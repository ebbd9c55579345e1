"""RL math against hand-computed values and against plain Python loops."""

import json
import math

import pytest
import torch

from rlhf.rl_math import (
    RunningMoments,
    explained_variance,
    gae,
    kl_estimate,
    kl_k1,
    kl_k3,
    kl_penalized_rewards,
    masked_mean,
    masked_var,
    masked_whiten,
    normalize_scores,
)


def t(x):
    return torch.tensor(x, dtype=torch.float64)


X = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
MASK = [[1, 1, 0], [1, 0, 0]]  # selects 1, 2, 4


# --- masked statistics --------------------------------------------------------------------------


def test_masked_mean():
    assert masked_mean(t(X), t(MASK)).item() == pytest.approx(7 / 3)  # (1 + 2 + 4) / 3
    torch.testing.assert_close(masked_mean(t(X), t(MASK), dim=1), t([1.5, 4.0]))
    assert masked_mean(t(X), torch.zeros(2, 3)).item() == 0.0  # empty selection: 0, not NaN


def test_masked_var():
    # deviations from 7/3: -4/3, -1/3, 5/3 -> squares sum 42/9 = 14/3
    assert masked_var(t(X), t(MASK), unbiased=False).item() == pytest.approx(14 / 9)
    assert masked_var(t(X), t(MASK)).item() == pytest.approx(7 / 3)  # 14/3 / (3 - 1)


def test_masked_var_needs_two_entries():
    with pytest.raises(ValueError, match="at least 2 unmasked entries, got 1"):
        masked_var(t(X), t([[1, 0, 0], [0, 0, 0]]))


def test_masked_whiten_shift_mean():
    w = masked_whiten(t(X), t(MASK))
    # first entry: (1 - 7/3) / sqrt(7/3)
    assert w[0, 0].item() == pytest.approx((1 - 7 / 3) / math.sqrt(7 / 3))
    assert masked_mean(w, t(MASK)).item() == pytest.approx(0.0, abs=1e-12)
    assert masked_var(w, t(MASK)).item() == pytest.approx(1.0)
    assert w[0, 2].item() == 0.0 and w[1, 1].item() == 0.0 and w[1, 2].item() == 0.0  # padding


def test_masked_whiten_keeps_mean_when_not_shifting():
    w = masked_whiten(t(X), t(MASK), shift_mean=False)
    assert w[0, 0].item() == pytest.approx((1 - 7 / 3) / math.sqrt(7 / 3) + 7 / 3)
    assert masked_mean(w, t(MASK)).item() == pytest.approx(7 / 3)
    assert masked_var(w, t(MASK)).item() == pytest.approx(1.0)


def test_explained_variance():
    # returns [1, 2, 3, 4], values [1, 2, 3, 3] -> residuals [0, 0, 0, 1]
    # Var[res] = 1/4 - 1/16 = 3/16; Var[R] = 30/4 - 25/4 = 5/4; EV = 1 - (3/16) / (5/4) = 0.85
    returns = t([[1.0, 2.0, 9.0], [3.0, 4.0, 9.0]])
    values = t([[1.0, 2.0, -9.0], [3.0, 3.0, -9.0]])  # third column is padding
    mask = t([[1, 1, 0], [1, 1, 0]])
    assert explained_variance(values, returns, mask).item() == pytest.approx(0.85)
    assert explained_variance(returns, returns, mask).item() == pytest.approx(1.0)


# --- KL estimators ------------------------------------------------------------------------------
# logp = [ln 1/2, ln 1/4], ref = [ln 1/4, ln 1/2]
# k1 = logp - ref = [ln 2, -ln 2]
# log r = ref - logp = [-ln 2, ln 2], r = [1/2, 2]: k3 = (r - 1) - log r = [ln 2 - 1/2, 1 - ln 2]
LOGP, REF = [math.log(0.5), math.log(0.25)], [math.log(0.25), math.log(0.5)]
LN2 = math.log(2)


def test_kl_k1_and_k3_on_known_logprobs():
    torch.testing.assert_close(kl_k1(t(LOGP), t(REF)), t([LN2, -LN2]))
    torch.testing.assert_close(kl_k3(t(LOGP), t(REF)), t([LN2 - 0.5, 1 - LN2]))
    torch.testing.assert_close(kl_estimate(t(LOGP), t(REF), "k1"), t([LN2, -LN2]))
    torch.testing.assert_close(kl_estimate(t(LOGP), t(REF), "k3"), t([LN2 - 0.5, 1 - LN2]))


def test_kl_k3_is_nonnegative():
    g = torch.Generator().manual_seed(0)
    logp, ref = torch.randn(4, 50, generator=g) * 3, torch.randn(4, 50, generator=g) * 3
    assert (kl_k3(logp, ref) >= 0).all()


def test_kl_estimate_unknown_name():
    with pytest.raises(ValueError, match=r"unknown KL estimator 'k2'; choose one of \['k1', 'k3'\]"):
        kl_estimate(t(LOGP), t(REF), "k2")


# --- shaped rewards -----------------------------------------------------------------------------
# Ragged responses: lengths 3, 2, 1. kl (k1) = logprobs - ref_logprobs on response tokens:
#   row 0: [-1 + 1.5, -2 + 1.5, -1 + 1] = [0.5, -0.5, 0]
#   row 1: [-1 + 2, -1 + 1, pad]        = [1, 0, 0]
#   row 2: [-2 + 1, pad, pad]           = [-1, 0, 0]
# non_score_reward = -0.1 * kl; the score (1, 2, 3) is added at index 2, 1, 0 respectively.
LOGPROBS = [[-1.0, -2.0, -1.0], [-1.0, -1.0, -5.0], [-2.0, -9.0, -9.0]]
REF_LOGPROBS = [[-1.5, -1.5, -1.0], [-2.0, -1.0, 0.0], [-1.0, 0.0, 0.0]]
RAGGED = [[1, 1, 1], [1, 1, 0], [1, 0, 0]]
SCORES = [1.0, 2.0, 3.0]


def test_kl_penalized_rewards_k1_ragged():
    rewards, non_score_reward, kl = kl_penalized_rewards(t(SCORES), t(LOGPROBS), t(REF_LOGPROBS), t(RAGGED), 0.1)
    torch.testing.assert_close(kl, t([[0.5, -0.5, 0.0], [1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]]))
    torch.testing.assert_close(non_score_reward, t([[-0.05, 0.05, 0.0], [-0.1, 0.0, 0.0], [0.1, 0.0, 0.0]]))
    torch.testing.assert_close(rewards, t([[-0.05, 0.05, 1.0], [-0.1, 2.0, 0.0], [3.1, 0.0, 0.0]]))


def test_kl_penalized_rewards_k3():
    # k3 with d = logp - ref: log r = -d, k3 = e^{-d} - 1 + d
    def k3(d):
        return math.exp(-d) - 1 + d

    kl_expected = [[k3(0.5), k3(-0.5), 0.0], [k3(1.0), 0.0, 0.0], [k3(-1.0), 0.0, 0.0]]
    rewards, _, kl = kl_penalized_rewards(t(SCORES), t(LOGPROBS), t(REF_LOGPROBS), t(RAGGED), 0.1, estimator="k3")
    torch.testing.assert_close(kl, t(kl_expected))
    expected = [[-0.1 * k for k in row] for row in kl_expected]
    expected[0][2] += 1.0
    expected[1][1] += 2.0
    expected[2][0] += 3.0
    torch.testing.assert_close(rewards, t(expected))


def test_kl_penalized_rewards_bad_inputs():
    with pytest.raises(ValueError, match="at least one response token"):
        kl_penalized_rewards(t([1.0]), t([[0.0, 0.0]]), t([[0.0, 0.0]]), t([[0, 0]]), 0.1)
    with pytest.raises(ValueError, match=r"scores must be \(B,\)"):
        kl_penalized_rewards(t([1.0, 2.0]), t([[0.0, 0.0]]), t([[0.0, 0.0]]), t([[1, 0]]), 0.1)
    with pytest.raises(ValueError, match=r"must all be \(B, T\)"):
        kl_penalized_rewards(t([1.0]), t([[0.0, 0.0]]), t([[0.0]]), t([[1, 0]]), 0.1)


# --- GAE ----------------------------------------------------------------------------------------


def gae_plain_loop(rewards, values, mask, gamma, lam):
    """Textbook GAE, one row at a time over that row's response tokens; V after the last token is 0."""
    B, T = rewards.shape
    advantages, returns = torch.zeros(B, T, dtype=torch.float64), torch.zeros(B, T, dtype=torch.float64)
    for b in range(B):
        steps = [i for i in range(T) if mask[b, i] == 1]
        lastgaelam = 0.0
        for k in reversed(range(len(steps))):
            i = steps[k]
            next_value = values[b, steps[k + 1]].item() if k + 1 < len(steps) else 0.0
            delta = rewards[b, i].item() + gamma * next_value - values[b, i].item()
            lastgaelam = delta + gamma * lam * lastgaelam
            advantages[b, i] = lastgaelam
            returns[b, i] = lastgaelam + values[b, i].item()
    return advantages, returns


def test_gae_hand_computed():
    # gamma = 1, lam = 0.95
    # row 0, full: r = [0, 0, 1], V = [0.5, 0.6, 0.7]
    #   A2 = 1 - 0.7 = 0.3
    #   A1 = (0 + 0.7 - 0.6) + 0.95 * 0.3   = 0.1 + 0.285   = 0.385
    #   A0 = (0 + 0.6 - 0.5) + 0.95 * 0.385 = 0.1 + 0.36575 = 0.46575
    #   returns = A + V = [0.96575, 0.985, 1.0]
    # row 1, mask [1, 1, 0]: r = [0, 1, pad], V = [0.5, 0.6, pad]
    #   A1 = 1 - 0.6 = 0.4 (V after the last token is 0, padding ignored)
    #   A0 = (0 + 0.6 - 0.5) + 0.95 * 0.4 = 0.48;  returns = [0.98, 1.0, 0]
    rewards = t([[0.0, 0.0, 1.0], [0.0, 1.0, 99.0]])
    values = t([[0.5, 0.6, 0.7], [0.5, 0.6, 9.0]])
    mask = t([[1, 1, 1], [1, 1, 0]])
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=0.95)
    torch.testing.assert_close(advantages, t([[0.46575, 0.385, 0.3], [0.48, 0.4, 0.0]]))
    torch.testing.assert_close(returns, t([[0.96575, 0.985, 1.0], [0.98, 1.0, 0.0]]))


def test_gae_matches_plain_loop_on_ragged_masks():
    g = torch.Generator().manual_seed(0)
    B, T = 6, 9
    rewards = torch.randn(B, T, generator=g, dtype=torch.float64)
    values = torch.randn(B, T, generator=g, dtype=torch.float64)
    lengths = [1, T, 4, 7, 2, T]
    mask = torch.zeros(B, T, dtype=torch.float64)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    mask[5] = 0
    mask[5, 3:] = 1  # one left-padded row: contiguous masks of either padding side work
    advantages, returns = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    expected_advantages, expected_returns = gae_plain_loop(rewards, values, mask, gamma=0.9, lam=0.8)
    torch.testing.assert_close(advantages, expected_advantages)
    torch.testing.assert_close(returns, expected_returns)


# --- reward normalisation -----------------------------------------------------------------------


def test_running_moments_hand_values_and_json_state():
    # all values seen: 1..5 -> mean 3, unbiased var = (4 + 1 + 0 + 1 + 4) / 4 = 2.5
    moments = RunningMoments()
    assert moments.update(t([1.0, 2.0, 3.0])) == pytest.approx((2.0, 1.0))  # batch mean, batch std
    moments.update(t([[4.0], [5.0]]))
    assert moments.mean == pytest.approx(3.0)
    assert moments.std == pytest.approx(math.sqrt(2.5))
    assert moments.count == 5

    restored = RunningMoments()
    restored.load_state_dict(json.loads(json.dumps(moments.state_dict())))
    assert restored.state_dict() == moments.state_dict()


def test_running_moments_matches_full_batch():
    g = torch.Generator().manual_seed(0)
    chunks = [torch.randn(n, generator=g, dtype=torch.float64) * 3 + 1 for n in (1, 7, 2, 30)]
    moments = RunningMoments()
    for chunk in chunks:
        moments.update(chunk)
    everything = torch.cat(chunks)
    assert moments.mean == pytest.approx(everything.mean().item())
    assert moments.std == pytest.approx(everything.std().item())


def test_running_moments_rejects_empty_batch():
    with pytest.raises(ValueError, match="non-empty batch"):
        RunningMoments().update(torch.zeros(0))


def test_normalize_scores():
    # (s - 3) / 2 = [-1, 0, 3.5]; clip 3 -> [-1, 0, 3]
    torch.testing.assert_close(normalize_scores(t([1.0, 3.0, 10.0]), 3.0, 2.0), t([-1.0, 0.0, 3.5]))
    torch.testing.assert_close(normalize_scores(t([1.0, 3.0, 10.0]), 3.0, 2.0, clip=3.0), t([-1.0, 0.0, 3.0]))
    with pytest.raises(ValueError, match="std > 0"):
        normalize_scores(t([1.0]), 0.0, 0.0)
