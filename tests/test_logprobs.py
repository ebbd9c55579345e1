"""Log-probabilities and entropies of logits, on hand-written logits with the arithmetic in comments."""

import math

import pytest
import torch

from rlhf.rollout.logprobs import entropy_from_logits, token_logprobs

LN3 = math.log(3)


def t(x):
    return torch.tensor(x, dtype=torch.float64)


# --- log-probabilities -------------------------------------------------------------------------


def test_token_logprobs_hand_values():
    # logits [0, ln3] -> p = [1/4, 3/4]; [0, 0] -> p = [1/2, 1/2]
    logits = t([[[0, LN3], [0, 0], [LN3, 0]]])  # (1, 3, 2)
    tokens = torch.tensor([[1, 0, 1]])
    expected = [[math.log(3 / 4), math.log(1 / 2), math.log(1 / 4)]]
    torch.testing.assert_close(token_logprobs(logits, tokens), t(expected))


def test_token_logprobs_matches_log_softmax_gather():
    logits = torch.randn(2, 5, 7, generator=torch.Generator().manual_seed(0))
    tokens = torch.randint(7, (2, 5), generator=torch.Generator().manual_seed(1))
    expected = torch.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(token_logprobs(logits, tokens), expected)


def test_token_logprobs_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"logits must be \(B, T, V\)"):
        token_logprobs(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.long))


def test_entropy_from_logits():
    # p = [1/4, 3/4]: H = -(1/4 ln 1/4 + 3/4 ln 3/4);  uniform over 2: H = ln 2
    logits = t([[[0, LN3], [5, 5]]])
    expected = [[-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), math.log(2)]]
    torch.testing.assert_close(entropy_from_logits(logits), t(expected))
