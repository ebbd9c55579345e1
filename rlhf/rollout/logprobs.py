"""Per-token log-probabilities (and entropies) of given tokens: from logits, and under a causal LM.

Only the positions that predict response tokens are projected onto the vocabulary
(``logits_to_keep``): with a 50k vocabulary, logits over the prompt would be most of the
memory and a large share of the compute, and nothing uses them.
"""

from __future__ import annotations

import torch

from rlhf.models.positions import position_ids_from_mask
from rlhf.models.shared_prefix import forward_sharing_prefix
from rlhf.rl_math import select


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(tokens[b, t] | logits[b, t]); the caller aligns the shift (logits[:, t] predicts token t+1).

    log_softmax(z)_i = z_i - logsumexp(z): gathering first keeps only one (B, T) extra tensor instead
    of a second (B, T, V) one. `tokens` must be valid ids (replace -100 before calling).
    """
    if logits.dim() != 3 or logits.shape[:2] != tokens.shape:
        raise ValueError(
            f"logits must be (B, T, V) and tokens (B, T); got {tuple(logits.shape)}, {tuple(tokens.shape)}"
        )
    token_logits = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (B, T)
    return token_logits - torch.logsumexp(logits, dim=-1)  # (B, T)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """H = -sum_v p_v log p_v = logsumexp(z) - sum_v p_v z_v, per position: (B, T, V) -> (B, T)."""
    p = torch.softmax(logits, dim=-1)  # (B, T, V)
    return torch.logsumexp(logits, dim=-1) - (p * logits).sum(-1)  # (B, T)


def response_logits(model, query_responses: torch.Tensor, attention_mask: torch.Tensor, prompt_length: int,
                    temperature: float = 1.0) -> torch.Tensor:
    """Logits predicting each response token, divided by the sampling temperature: (B, R, V).

    Rows that repeat a prompt (GRPO's groups) run it once (rlhf/models/shared_prefix.py): all of it
    but its last token, whose position predicts response token 0 and so runs with the responses."""
    R = query_responses.shape[1] - prompt_length
    shared = forward_sharing_prefix(model, query_responses[:, :-1], attention_mask[:, :-1], prompt_length - 1)
    if shared is not None:
        logits = shared.logits  # (B, R, V)
    else:
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

    Used by DPO on whole [prompt | response] rows. Only the marked positions are projected onto
    the vocabulary: the model runs to its last hidden state and its own LM head is applied to
    those rows alone, so the fp32 logits are (marked tokens, V) instead of (B, T, V); in a batch
    of HH-RLHF dialogues with a 50k vocabulary that is most of the peak memory. Where that is not
    possible (sharded parameters, or a model whose logits are not just its head on the last
    hidden state) it falls back to full logits, limited to the last ``keep_last`` positions."""
    T = input_ids.shape[1]
    window = input_ids.shape[0] * (T - 1 if keep_last is None else min(T - 1, keep_last))  # predicting positions
    head = _projectable_head(model)
    # Rows of equal shape (every response spanning the window) gain nothing from the selection.
    if head is None or loss_mask[:, 1:].sum() > SELECT_BELOW * window:
        return _sequence_logprobs_full(model, input_ids, attention_mask, loss_mask, keep_last)
    output = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask),
                   use_cache=False, logits_to_keep=1, output_hidden_states=True)
    hidden = output.hidden_states[-1]  # (B, T, H)
    if not _head_reproduces_logits(head, hidden[:, -1], output.logits[:, -1]):
        _mark_unprojectable(model)
        return _sequence_logprobs_full(model, input_ids, attention_mask, loss_mask, keep_last)
    predicts_marked = loss_mask[:, 1:].bool()  # (B, T-1): position t predicts token t+1
    rows = predicts_marked.nonzero()[:, 0]  # (N,)
    logits = head(hidden[:, :-1][predicts_marked]).float()  # (N, V)
    logprobs = token_logprobs(logits[None], input_ids[:, 1:][predicts_marked][None])[0]  # (N,)
    return torch.zeros(input_ids.shape[0], dtype=logprobs.dtype, device=logprobs.device).index_add(0, rows, logprobs)


def _sequence_logprobs_full(model, input_ids, attention_mask, loss_mask, keep_last):
    T = input_ids.shape[1]
    keep = T if keep_last is None else min(T, keep_last + 1)
    logits = model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask),
        use_cache=False, logits_to_keep=keep,
    ).logits[:, :-1].float()  # (B, keep-1, V): predicts tokens T-keep+1 .. T-1
    targets = input_ids[:, T - keep + 1:]  # (B, keep-1)
    mask = loss_mask[:, T - keep + 1:]  # (B, keep-1)
    logprobs = token_logprobs(logits, targets)  # (B, keep-1)
    return select(logprobs, mask).sum(-1)  # (B,)


_UNPROJECTABLE = "_rlhf_logits_need_full_forward"
SELECT_BELOW = 0.9  # project only the marked positions when they are under 90% of the logits window


def _projectable_head(model):
    """The LM head, if it may be applied outside the model's forward: a plain or DDP-wrapped
    model (DDP's gradient hooks sit on the parameters, so a use outside forward is reduced
    too). Sharding wrappers (FSDP, DeepSpeed) only gather parameters inside their forward."""
    inner = _without_ddp(model)
    name = type(inner).__name__
    if name.startswith("FSDP") or name in ("FullyShardedDataParallel", "DeepSpeedEngine"):
        return None
    if getattr(inner, _UNPROJECTABLE, False) or not hasattr(inner, "get_output_embeddings"):
        return None
    return inner.get_output_embeddings()


def _head_reproduces_logits(head, last_hidden: torch.Tensor, last_logits: torch.Tensor) -> bool:
    """Is ``logits = head(last hidden state)`` for this model? False for models that scale or
    soft-cap their logits after the head (Gemma 2, Cohere): checked on the one position the
    forward did project, which costs B x V."""
    with torch.no_grad():
        return torch.allclose(head(last_hidden).float(), last_logits.float(), rtol=1e-3, atol=1e-3)


def _mark_unprojectable(model) -> None:
    setattr(_without_ddp(model), _UNPROJECTABLE, True)


def _without_ddp(model):
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
