"""Per-token log-probabilities of given tokens under a causal LM.

Only the positions that predict response tokens are projected onto the vocabulary
(``logits_to_keep``): with a 50k vocabulary, logits over the prompt would be most of the
memory and a large share of the compute, and nothing uses them.
"""

from __future__ import annotations

import torch

from rlhf.losses import entropy_from_logits, token_logprobs
from rlhf.models.scalar_model import position_ids_from_mask


def response_logits(model, query_responses: torch.Tensor, attention_mask: torch.Tensor, prompt_length: int,
                    temperature: float = 1.0) -> torch.Tensor:
    """Logits predicting each response token, divided by the sampling temperature: (B, R, V)."""
    R = query_responses.shape[1] - prompt_length
    logits = model(
        input_ids=query_responses, attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask), use_cache=False, logits_to_keep=R + 1,
    ).logits[:, :-1]  # (B, R, V): position P-1+t predicts response token t
    return logits.float() / temperature if temperature != 1.0 else logits.float()


def response_logprobs(model, query_responses: torch.Tensor, attention_mask: torch.Tensor, prompt_length: int,
                      temperature: float = 1.0, with_entropy: bool = False):
    """log pi(response token t | prompt, response_<t) at the sampling temperature: (B, R),
    and the per-token entropy (B, R) when asked."""
    logits = response_logits(model, query_responses, attention_mask, prompt_length, temperature)
    logprobs = token_logprobs(logits, query_responses[:, prompt_length:])  # (B, R)
    if with_entropy:
        return logprobs, entropy_from_logits(logits)
    return logprobs


def sequence_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor,
                      keep_last: int | None = None) -> torch.Tensor:
    """Sum of log p over the tokens marked in ``loss_mask`` (B, T) of each row: (B,).

    Used by DPO on whole [prompt | response] rows; ``keep_last`` limits the vocabulary
    projection to the last positions (enough to cover every marked token)."""
    T = input_ids.shape[1]
    keep = T if keep_last is None else min(T, keep_last + 1)
    logits = model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask),
        use_cache=False, logits_to_keep=keep,
    ).logits[:, :-1].float()  # (B, keep-1, V): predicts tokens T-keep+1 .. T-1
    targets = input_ids[:, T - keep + 1:]  # (B, keep-1)
    mask = loss_mask[:, T - keep + 1:].to(logits.dtype)
    return (token_logprobs(logits, targets) * mask).sum(-1)  # (B,)
