"""GRPO's math on hand-written batches: the critic-free advantage estimators (rl_math), the upper clip
and per-sequence aggregation of the clipped surrogate, and the k3 KL loss (losses)."""

import math

import pytest
import torch

from rlhf.losses import aggregate_token_losses, kl_loss_k3, ppo_policy_loss
from rlhf.rl_math import (dr_grpo_advantages, frac_zero_std_groups, grpo_advantages, reinforce_pp_advantages,
                          reinforce_pp_baseline_advantages, reverse_cumsum, rloo_advantages)


def t(x):
    return torch.tensor(x, dtype=torch.float64)


# Two prompts, G = 3 responses each, contiguous: group 1 = [1, 2, 3] (mean 2, unbiased std
# sqrt((1 + 0 + 1) / 2) = 1), group 2 = [5, 5, 5] (all equal: no signal).
SCORES = [1.0, 2.0, 3.0, 5.0, 5.0, 5.0]


def test_grpo_divides_by_the_group_std():
    expected = [-1 / (1 + 1e-4), 0.0, 1 / (1 + 1e-4), 0.0, 0.0, 0.0]  # (r - 2) / (1 + eps); group 2: 0 / (0 + eps)
    torch.testing.assert_close(grpo_advantages(t(SCORES), 3), t(expected))


def test_grpo_batch_scaling_divides_by_the_batch_std():
    # batch mean 21/6 = 3.5; deviations -2.5 -1.5 -0.5 1.5 1.5 1.5; squares sum 15.5; unbiased var 15.5/5 = 3.1
    std = math.sqrt(3.1)
    expected = [-1 / (std + 1e-4), 0.0, 1 / (std + 1e-4), 0.0, 0.0, 0.0]  # still centred on the group mean
    torch.testing.assert_close(grpo_advantages(t(SCORES), 3, scale_rewards="batch"), t(expected))


def test_dr_grpo_subtracts_the_group_mean_only():
    torch.testing.assert_close(dr_grpo_advantages(t(SCORES), 3), t([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(grpo_advantages(t(SCORES), 3, scale_rewards="none"), dr_grpo_advantages(t(SCORES), 3))


def test_rloo_baseline_is_the_mean_of_the_other_responses():
    # r_0 = 1, others (2 + 3) / 2 = 2.5 -> -1.5; r_1 = 2, others 2 -> 0; r_2 = 3, others 1.5 -> 1.5
    torch.testing.assert_close(rloo_advantages(t(SCORES), 3), t([-1.5, 0.0, 1.5, 0.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="at least 2 responses per prompt"):
        rloo_advantages(t([1.0, 2.0]), 1)


def test_estimators_reject_scores_that_do_not_split_into_groups():
    with pytest.raises(ValueError, match=r"scores must be \(num_prompts \* G,\) with G = 4, got \(6,\)"):
        grpo_advantages(t(SCORES), 4)
    with pytest.raises(ValueError, match="scale_rewards must be group, batch or none"):
        grpo_advantages(t(SCORES), 3, scale_rewards="sequence")


def test_frac_zero_std_counts_groups_with_equal_rewards():
    assert frac_zero_std_groups(t(SCORES), 3).item() == 0.5
    assert frac_zero_std_groups(t([1.0, 1.0, 0.0, 1.0]), 2).item() == 0.5
    assert frac_zero_std_groups(t([1.0, 2.0, 0.0, 1.0]), 2).item() == 0.0


# REINFORCE++: B = 2 responses of 3 and 2 tokens, kl_coef 0.5, k1 (logp - ref_logp):
#   kl             = [[0.5, 0, -0.5], [0, 1, pad]]
#   -0.5 * kl      = [[-0.25, 0, 0.25], [0, -0.5, pad]]; scores [1, 2] added at the last token
#   rewards        = [[-0.25, 0, 1.25], [0, 1.5, pad]]
#   returns-to-go  = [[1.0, 1.25, 1.25], [1.5, 1.5, pad]]
#   whitened: mean 6.5/5 = 1.3; deviations -0.3 -0.05 -0.05 0.2 0.2; squares 0.175; unbiased var 0.175/4
LOGPROBS = [[-1.0, -1.0, -1.0], [-2.0, -2.0, 50.0]]
REF_LOGPROBS = [[-1.5, -1.0, -0.5], [-2.0, -3.0, -50.0]]
MASK = [[1, 1, 1], [1, 1, 0]]


def test_reverse_cumsum_is_the_return_to_go():
    torch.testing.assert_close(reverse_cumsum(t([[1.0, 2.0, 3.0], [4.0, 5.0, 99.0]]), t(MASK)),
                               t([[6.0, 5.0, 3.0], [9.0, 5.0, 0.0]]))


def test_reinforce_pp_whitens_kl_shaped_returns_over_the_batch():
    std = math.sqrt(0.175 / 4 + 1e-8)
    expected = [[-0.3 / std, -0.05 / std, -0.05 / std], [0.2 / std, 0.2 / std, 0.0]]
    advantages = reinforce_pp_advantages(t([1.0, 2.0]), t(LOGPROBS), t(REF_LOGPROBS), t(MASK), 0.5)
    torch.testing.assert_close(advantages, t(expected))


def test_reinforce_pp_baseline_subtracts_the_group_mean_before_whitening():
    # One-token responses, no KL: scores [1, 3 | 10, 14], G = 2 -> centred [-1, 1, -2, 2]; mean 0,
    # unbiased var (1 + 1 + 4 + 4) / 3 = 10/3. Without the baseline the deviations would be -6 -4 3 7.
    ones, zeros = torch.ones(4, 1, dtype=torch.float64), torch.zeros(4, 1, dtype=torch.float64)
    scores = t([1.0, 3.0, 10.0, 14.0])
    advantages = reinforce_pp_baseline_advantages(scores, 2, zeros, zeros, ones, kl_coef=0.5)
    torch.testing.assert_close(advantages, t([[-1.0], [1.0], [-2.0], [2.0]]) / math.sqrt(10 / 3 + 1e-8))
    plain = reinforce_pp_advantages(scores, zeros, zeros, ones, kl_coef=0.5)
    torch.testing.assert_close(plain, t([[-6.0], [-4.0], [3.0], [7.0]]) / math.sqrt(110 / 3 + 1e-8))


# --- the surrogate with an upper clip, and per-sequence aggregation --------------------------------
# Same tokens as test_losses.py's PPO case, eps = 0.2 below and eps_high = 0.28 above (ratio clip 0.8 .. 1.28):
#   r=1.1, A=1:  max(-1.1, -1.1)  = -1.1   unclipped
#   r=1.5, A=2:  max(-3.0, -2.56) = -2.56  clipped at 1.28 (at 1.2 with PPO's eps: -2.4)
#   r=0.5, A=1:  max(-0.5, -0.8)  = -0.5   unclipped
#   r=0.5, A=-1: max( 0.5,  0.8)  =  0.8   clipped
#   r=1.5, A=-1: max( 1.5,  1.28) =  1.5   unclipped
# token:    (-1.1 - 2.56 - 0.5 + 0.8 + 1.5) / 5 = -1.86 / 5 = -0.372
# sequence: row 0 -4.16 / 3, row 1 2.3 / 2 = 1.15 -> (-1.386667 + 1.15) / 2 = -0.118333
RATIOS = [[1.1, 1.5, 0.5], [0.5, 1.5, 3.0]]
ADVANTAGES = [[1.0, 2.0, 1.0], [-1.0, -1.0, 100.0]]


def test_clipped_surrogate_with_an_upper_clip():
    old = torch.zeros(2, 3, dtype=torch.float64)
    loss, stats = ppo_policy_loss(t(RATIOS).log(), old, t(ADVANTAGES), t(MASK), 0.2, cliprange_high=0.28)
    assert loss.item() == pytest.approx(-0.372)
    assert stats["clipfrac"].item() == pytest.approx(0.4)
    loss, _ = ppo_policy_loss(t(RATIOS).log(), old, t(ADVANTAGES), t(MASK), 0.2, cliprange_high=0.28,
                              aggregation="sequence")
    assert loss.item() == pytest.approx((-4.16 / 3 + 1.15) / 2)
    loss, _ = ppo_policy_loss(t(RATIOS).log(), old, t(ADVANTAGES), t(MASK), 0.2)  # default: PPO's symmetric clip
    assert loss.item() == pytest.approx(-0.34)


def test_aggregation_names():
    losses = t([[1.0, 2.0, 3.0], [4.0, 5.0, 99.0]])
    assert aggregate_token_losses(losses, t(MASK)).item() == pytest.approx(15 / 5)
    assert aggregate_token_losses(losses, t(MASK), "sequence").item() == pytest.approx((2.0 + 4.5) / 2)
    with pytest.raises(ValueError, match="aggregation must be token or sequence"):
        aggregate_token_losses(losses, t(MASK), "grpo")


def test_k3_kl_loss_and_its_gradient():
    # log r = ref - logp per token: ln2, 0, -ln2 | ln3, 0, (padding 99)
    # k3 = r - 1 - log r: 1 - ln2, 0, ln2 - 0.5 | 2 - ln3, 0
    logprobs = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    ref = t([[math.log(2), 0.0, -math.log(2)], [math.log(3), 0.0, 99.0]])
    loss = kl_loss_k3(logprobs, ref, t(MASK))
    assert loss.item() == pytest.approx((1 - math.log(2) + math.log(2) - 0.5 + 2 - math.log(3)) / 5)
    # d k3 / d logp = 1 - r: -1, 0, 0.5 | -2, 0 (padding 0), each / 5 tokens
    loss.backward()
    torch.testing.assert_close(logprobs.grad, t([[-1.0, 0.0, 0.5], [-2.0, 0.0, 0.0]]) / 5)
    seq = kl_loss_k3(torch.zeros(2, 3, dtype=torch.float64), ref, t(MASK), "sequence")
    assert seq.item() == pytest.approx((0.5 / 3 + (2 - math.log(3)) / 2) / 2)


class TwoProcesses:
    """A stand-in for accelerate with two processes: ``batches[r]`` is what process r passes to
    ``on_all_processes`` (scores, then per-token tensors); gather concatenates them in rank order."""

    num_processes = 2

    def __init__(self, rank, batches):
        self.process_index, self.batches, self.calls = rank, batches, 0

    def pad_across_processes(self, x, dim=1):
        width = max(batch[1].shape[1] for batch in self.batches)
        return torch.nn.functional.pad(x, (0, width - x.shape[1]))

    def gather(self, x):
        i, self.calls = self.calls, self.calls + 1
        return torch.cat([batch[i] if i == 0 else self.pad_across_processes(batch[i]) for batch in self.batches])


def test_batch_statistics_are_those_of_the_global_batch():
    """REINFORCE++ whitens over the batch: under DDP each process must get its rows of the whitening of
    all processes' rows together (responses of different lengths on each), not of its own alone."""
    from rlhf.trainers.grpo import on_all_processes

    rank0 = (t([1.0, 2.0]), t(LOGPROBS), t(REF_LOGPROBS), t(MASK))  # (2,), (2, 3) x 3
    rank1 = (t([5.0, 9.0]), t([[-1.0, -2.0], [0.0, 0.0]]), t([[-1.0, -1.0], [0.0, 0.0]]), t([[1, 1], [1, 0]]))
    pad = lambda x: torch.nn.functional.pad(x, (0, 1))  # noqa: E731
    full = reinforce_pp_advantages(torch.cat([rank0[0], rank1[0]]), *(torch.cat([a, pad(b)]) for a, b in
                                                                       zip(rank0[1:], rank1[1:])), kl_coef=0.5)
    def estimator(s, lp, ref, m):
        return reinforce_pp_advantages(s, lp, ref, m, 0.5)

    mine0 = on_all_processes(estimator, TwoProcesses(0, [rank0, rank1]), *rank0)
    mine1 = on_all_processes(estimator, TwoProcesses(1, [rank0, rank1]), *rank1)
    torch.testing.assert_close(mine0, full[:2])
    torch.testing.assert_close(mine1, full[2:, :2])
    assert not torch.allclose(mine0, estimator(*rank0))  # whitening the process's own rows alone differs
