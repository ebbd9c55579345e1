"""Each loss on a hand-written small batch; expected values computed by hand in the comments."""

import math

import pytest
import torch

from rlhf.losses import (
    dpo_loss,
    hinge_loss,
    ipo_loss,
    pairwise_rm_loss,
    ppo_policy_loss,
    ppo_value_loss,
    sft_loss,
)

LN3 = math.log(3)


def t(x):
    return torch.tensor(x, dtype=torch.float64)


def softplus(x):
    # -log sigma(x) = log(1 + e^{-x}), so -log sigma(-x) = softplus(x)
    return math.log1p(math.exp(x))


# --- SFT ----------------------------------------------------------------------------------------


def test_sft_loss_shifts_and_ignores_minus_100():
    # Row 0: logits[0] predicts labels[1] = 1 (p = 3/4), logits[1] predicts labels[2] = 0 (p = 3/4).
    # Row 1: logits[0] predicts labels[1] = 0 (p = 1/2), labels[2] = -100 is ignored.
    # labels[:, 0] is never a target, the last position's logits never predict anything.
    # loss = -(ln 3/4 + ln 3/4 + ln 1/2) / 3
    logits = t([[[0, LN3], [LN3, 0], [9, -9]], [[0, 0], [0, LN3], [9, -9]]])  # (2, 3, 2)
    labels = torch.tensor([[-100, 1, 0], [1, 0, -100]])
    expected = -(2 * math.log(3 / 4) + math.log(1 / 2)) / 3
    assert sft_loss(logits, labels).item() == pytest.approx(expected)


def test_sft_loss_all_ignored_is_zero_not_nan():
    logits = torch.zeros(1, 3, 2)
    assert sft_loss(logits, torch.full((1, 3), -100)).item() == 0.0


# --- reward model -------------------------------------------------------------------------------

R_C, R_R = [2.0, 0.5], [1.0, 1.5]  # r_c - r_r = [1, -1]


def test_pairwise_rm_loss_bradley_terry():
    # (-ln sigma(1) - ln sigma(-1)) / 2 = (softplus(-1) + softplus(1)) / 2
    loss, stats = pairwise_rm_loss(t(R_C), t(R_R))
    assert loss.item() == pytest.approx((softplus(-1) + softplus(1)) / 2)
    assert stats["accuracy"].item() == 0.5  # only row 0 has r_c > r_r
    assert stats["margin"].item() == pytest.approx(0.0)  # mean(1, -1)


def test_pairwise_rm_loss_with_margin():
    # logits = r_c - r_r - m = [1 - 0.5, -1 - 0.5] = [0.5, -1.5]
    loss, _ = pairwise_rm_loss(t(R_C), t(R_R), margin=t([0.5, 0.5]))
    assert loss.item() == pytest.approx((softplus(-0.5) + softplus(1.5)) / 2)


def test_pairwise_rm_loss_with_centering():
    # (r_c + r_r)^2 = [3^2, 2^2] = [9, 4], mean 6.5, times 0.01 = 0.065
    loss, _ = pairwise_rm_loss(t(R_C), t(R_R), center_coef=0.01)
    assert loss.item() == pytest.approx((softplus(-1) + softplus(1)) / 2 + 0.065)


def test_pairwise_rm_loss_with_weights():
    # weighted mean with w = [3, 1]: (3 * softplus(-1) + 1 * softplus(1)) / 4
    loss, _ = pairwise_rm_loss(t(R_C), t(R_R), weights=t([3.0, 1.0]))
    assert loss.item() == pytest.approx((3 * softplus(-1) + softplus(1)) / 4)


def test_pairwise_rm_loss_with_all_weights_zero_is_zero_not_nan():
    # a batch of pairs only from labelers weighted 0: 0 / 0 would be NaN; nothing to learn -> 0, no gradient
    chosen = t(R_C).requires_grad_()
    loss, _ = pairwise_rm_loss(chosen, t(R_R), weights=t([0.0, 0.0]))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(chosen.grad, torch.zeros(2))


def test_pairwise_rm_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes must match"):
        pairwise_rm_loss(t([1.0, 2.0]), t([1.0]))


# --- DPO family ---------------------------------------------------------------------------------
# pi_c = [-1, -2], pi_r = [-3, -1.2], ref_c = [-1.5, -1.5], ref_r = [-2.5, -1.5], beta = 0.5
# h = (pi_c - pi_r) - (ref_c - ref_r) = [2 - 1, -0.8 - 0] = [1, -0.8];  beta * h = [0.5, -0.4]
# chosen rewards   = 0.5 * (pi_c - ref_c) = 0.5 * [0.5, -0.5] = [0.25, -0.25]  -> mean 0
# rejected rewards = 0.5 * (pi_r - ref_r) = 0.5 * [-0.5, 0.3] = [-0.25, 0.15]  -> mean -0.05
# margins = [0.5, -0.4] -> mean 0.05; accuracy = 1/2
DPO_BATCH = (t([-1.0, -2.0]), t([-3.0, -1.2]), t([-1.5, -1.5]), t([-2.5, -1.5]))


def test_dpo_loss():
    # -ln sigma(0.5), -ln sigma(-0.4)
    loss, stats = dpo_loss(*DPO_BATCH, beta=0.5)
    assert loss.item() == pytest.approx((softplus(-0.5) + softplus(0.4)) / 2)
    assert stats["chosen_rewards"].item() == pytest.approx(0.0)
    assert stats["rejected_rewards"].item() == pytest.approx(-0.05)
    assert stats["margin"].item() == pytest.approx(0.05)
    assert stats["accuracy"].item() == 0.5


def test_dpo_loss_label_smoothing():
    # row i: 0.9 * -ln sigma(bh_i) + 0.1 * -ln sigma(-bh_i)
    loss, _ = dpo_loss(*DPO_BATCH, beta=0.5, label_smoothing=0.1)
    row0 = 0.9 * softplus(-0.5) + 0.1 * softplus(0.5)
    row1 = 0.9 * softplus(0.4) + 0.1 * softplus(-0.4)
    assert loss.item() == pytest.approx((row0 + row1) / 2)


def test_ipo_loss():
    # target 1 / (2 * 0.5) = 1: [(1 - 1)^2, (-0.8 - 1)^2] = [0, 3.24] -> mean 1.62
    loss, stats = ipo_loss(*DPO_BATCH, beta=0.5)
    assert loss.item() == pytest.approx(1.62)
    assert stats["margin"].item() == pytest.approx(0.05)


def test_hinge_loss():
    # beta = 0.5: relu(1 - [0.5, -0.4]) = [0.5, 1.4] -> 0.95
    # beta = 2:   relu(1 - [2, -1.6])   = [0, 2.6]   -> 1.3 (row 0 is past the margin: no loss)
    assert hinge_loss(*DPO_BATCH, beta=0.5)[0].item() == pytest.approx(0.95)
    assert hinge_loss(*DPO_BATCH, beta=2.0)[0].item() == pytest.approx(1.3)


def test_dpo_family_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes must match"):
        dpo_loss(t([1.0, 2.0]), t([1.0]), t([1.0, 2.0]), t([1.0, 2.0]), beta=0.1)


# --- DPO family on pairs of different lengths, through the DPO stage's log-probs ---------------
# Vocabulary of 4. The policy predicts p = [1/2, 1/4, 1/8, 1/8] at every position, the reference is
# uniform (1/4 each), so log-probs per token are: policy [-1, -2, -3, -3] ln 2, reference -2 ln 2.
# Pair 1: chosen [0, 0] (2 tokens), rejected [1, 1, 1, 1] (4 tokens)
#   summed:   pi_c = -2 ln2, ref_c = -4 ln2, pi_r = -8 ln2, ref_r = -8 ln2  -> h = 2 ln2
#   averaged: pi_c = -ln2,   ref_c = -2 ln2, pi_r = -2 ln2, ref_r = -2 ln2  -> h = ln2
# Pair 2: chosen [1, 2, 3] (3 tokens), rejected [0] (1 token)
#   summed:   pi_c = -8 ln2, ref_c = -6 ln2, pi_r = -ln2,   ref_r = -2 ln2  -> h = -2 ln2 - ln2 = -3 ln2
#   averaged: pi_c = -8/3 ln2, ref_c = -2 ln2, pi_r = -ln2, ref_r = -2 ln2  -> h = -2/3 ln2 - ln2 = -5/3 ln2
# IPO (beta 0.5, target 1/(2 beta) = 1) regresses the length-AVERAGED h; DPO and hinge use the summed h.
LN2 = math.log(2)
PAIRS_OF_DIFFERENT_LENGTHS = [{"prompt_ids": [3, 2], "chosen_ids": [0, 0], "rejected_ids": [1, 1, 1, 1]},
                              {"prompt_ids": [2, 3], "chosen_ids": [1, 2, 3], "rejected_ids": [0]}]


class FixedNextToken(torch.nn.Module):
    """A causal LM stand-in predicting the same distribution at every position."""

    def __init__(self, probs):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.tensor(probs, dtype=torch.float64).log())

    def forward(self, input_ids, logits_to_keep=0, **kwargs):
        from types import SimpleNamespace

        B, T = input_ids.shape
        return SimpleNamespace(logits=self.logits.expand(B, T, -1)[:, -logits_to_keep:])  # (B, keep, V)


@pytest.mark.parametrize("loss_type, expected", [
    ("ipo", ((LN2 - 1) ** 2 + (-5 / 3 * LN2 - 1) ** 2) / 2),  # not ((2 ln2 - 1)^2 + (-3 ln2 - 1)^2) / 2
    ("sigmoid", (math.log(1 + 2 ** -1) + math.log(1 + 2 ** 1.5)) / 2),  # -ln sigma(beta h), beta h = [ln2, -1.5 ln2]
    ("hinge", ((1 - LN2) + (1 + 1.5 * LN2)) / 2),  # max(0, 1 - beta h)
])
def test_dpo_family_on_pairs_of_different_lengths(loss_type, expected):
    from types import SimpleNamespace

    from rlhf.data import collate_pairs
    from rlhf.trainers.dpo import pair_logprobs, preference_loss

    policy, reference = FixedNextToken([1 / 2, 1 / 4, 1 / 8, 1 / 8]), FixedNextToken([1 / 4] * 4)
    batch = collate_pairs(PAIRS_OF_DIFFERENT_LENGTHS, pad_token_id=3)  # (4, 6), right-padded
    length_normalize = loss_type == "ipo"  # as the DPO stage decides
    config = SimpleNamespace(loss_type=loss_type, beta=0.5, label_smoothing=0.0)
    loss, _ = preference_loss(config, pair_logprobs(policy, batch, length_normalize),
                              pair_logprobs(reference, batch, length_normalize))
    assert loss.item() == pytest.approx(expected)


# --- PPO policy loss ----------------------------------------------------------------------------
# cliprange 0.2; old_logprobs = 0 so ratio = exp(logprobs). Per token -> max(-A r, -A clip(r, 0.8, 1.2)):
#   r=1.1, A=+1: max(-1.1, -1.1) = -1.1   unclipped (inside the range)
#   r=1.5, A=+2: max(-3.0, -2.4) = -2.4   clipped   (A > 0, ratio too high)
#   r=0.5, A=+1: max(-0.5, -0.8) = -0.5   unclipped (A > 0, low ratio is pessimistic already)
#   r=0.5, A=-1: max( 0.5,  0.8) =  0.8   clipped   (A < 0, ratio too low)
#   r=1.5, A=-1: max( 1.5,  1.2) =  1.5   unclipped (A < 0, high ratio is pessimistic already)
#   padding: r=3, A=100, ignored
# pg_loss = (-1.1 - 2.4 - 0.5 + 0.8 + 1.5) / 5 = -0.34; clipfrac = 2/5; mean ratio = 5.1 / 5 = 1.02
RATIOS = [[1.1, 1.5, 0.5], [0.5, 1.5, 3.0]]
ADVANTAGES = [[1.0, 2.0, 1.0], [-1.0, -1.0, 100.0]]
MASK = [[1, 1, 1], [1, 1, 0]]


def test_ppo_policy_loss_clipped_and_unclipped_regimes():
    logprobs = t(RATIOS).log().requires_grad_()
    pg_loss, stats = ppo_policy_loss(logprobs, torch.zeros(2, 3, dtype=torch.float64), t(ADVANTAGES), t(MASK), 0.2)
    assert pg_loss.item() == pytest.approx(-0.34)
    assert stats["clipfrac"].item() == pytest.approx(0.4)
    assert stats["ratio"].item() == pytest.approx(1.02)
    # approx_kl = mean (r - 1) - ln r over the 5 response tokens
    k3 = [(r - 1) - math.log(r) for r in [1.1, 1.5, 0.5, 0.5, 1.5]]
    assert stats["approx_kl"].item() == pytest.approx(sum(k3) / 5)

    # d/dlogp of -A r is -A r; clipped tokens and padding get no gradient. Divided by 5 tokens.
    pg_loss.backward()
    expected_grad = [[-1.1 / 5, 0.0, -0.5 / 5], [0.0, 1.5 / 5, 0.0]]
    torch.testing.assert_close(logprobs.grad, t(expected_grad))


def test_ppo_policy_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes must match"):
        ppo_policy_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 2), 0.2)


# --- PPO value loss -----------------------------------------------------------------------------
# cliprange_value 0.2; V_clip = V_old + clip(V - V_old, -0.2, 0.2); per token max((V-R)^2, (V_clip-R)^2):
#   V=1,  V_old=0.5, R=2:  V_clip=0.7:  max(1, 1.69) = 1.69  clipped
#   V=1,  V_old=0.9, R=0:  V_clip=1.0:  max(1, 1)    = 1     not clipped (equal)
#   V=0,  V_old=0.5, R=1:  V_clip=0.3:  max(1, 0.49) = 1     not clipped
#   V=2,  V_old=1,   R=3:  V_clip=1.2:  max(1, 3.24) = 3.24  clipped
#   V=-1, V_old=0,   R=-1: V_clip=-0.2: max(0, 0.64) = 0.64  clipped
#   padding ignored
# vf_loss = 0.5 * (1.69 + 1 + 1 + 3.24 + 0.64) / 5 = 0.5 * 1.514 = 0.757; vf_clipfrac = 3/5
VALUES = [[1.0, 1.0, 0.0], [2.0, -1.0, 10.0]]
OLD_VALUES = [[0.5, 0.9, 0.5], [1.0, 0.0, 0.0]]
RETURNS = [[2.0, 0.0, 1.0], [3.0, -1.0, 0.0]]


def test_ppo_value_loss_clipped():
    vf_loss, stats = ppo_value_loss(t(VALUES), t(OLD_VALUES), t(RETURNS), t(MASK), 0.2)
    assert vf_loss.item() == pytest.approx(0.757)
    assert stats["vf_clipfrac"].item() == pytest.approx(0.6)


def test_ppo_value_loss_unclipped():
    # (V - R)^2 = [1, 1, 1, 1, 0] -> 0.5 * 4 / 5 = 0.4
    vf_loss, stats = ppo_value_loss(t(VALUES), t(OLD_VALUES), t(RETURNS), t(MASK), None)
    assert vf_loss.item() == pytest.approx(0.4)
    assert stats["vf_clipfrac"].item() == 0.0
