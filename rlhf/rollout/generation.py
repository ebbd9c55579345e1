"""Sampling responses from a policy: batched, left-padded prompts, KV cache, stop at end-of-text.

Generation itself is transformers' ``generate``; what is ours is the bookkeeping PPO needs:
where each response starts and ends, a mask of its tokens, and whether it reached
end-of-text (a response cut off by ``max_new_tokens`` can be penalised).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass
class SamplingParams:
    max_new_tokens: int = 32
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    do_sample: bool = True
    min_new_tokens: int = 0


@dataclass
class Rollout:
    """Prompts and their sampled responses, laid out as ``[left-padded prompt | response]``."""

    query_responses: torch.Tensor  # (B, P + R) token ids
    attention_mask: torch.Tensor  # (B, P + R) 1 on real prompt and response tokens
    response_mask: torch.Tensor  # (B, R) 1 on response tokens up to and including end-of-text
    ended: torch.Tensor  # (B,) bool: the response reached end-of-text
    prompt_length: int  # P, the column where every response starts

    @property
    def responses(self) -> torch.Tensor:
        return self.query_responses[:, self.prompt_length:]  # (B, R)


def response_mask_from_ids(responses: torch.Tensor, eos_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """1 on every token up to and including the first end-of-text, 0 after; and whether it ended."""
    is_eos = responses == eos_token_id  # (B, R)
    ended = is_eos.any(-1)  # (B,)
    # Tokens strictly after the first eos have a cumulative eos count >= 1 excluding themselves.
    after_eos = (is_eos.long().cumsum(-1) - is_eos.long()) > 0
    return (~after_eos).long(), ended


@torch.no_grad()
def generate(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, params: SamplingParams,
             eos_token_id: int, pad_token_id: int) -> Rollout:
    """Sample one response per left-padded prompt. Sampling uses torch's global RNG, so a
    seeded run samples the same responses."""
    was_training = model.training
    model.eval()
    kwargs = dict(max_new_tokens=params.max_new_tokens, min_new_tokens=params.min_new_tokens,
                  do_sample=params.do_sample, eos_token_id=eos_token_id, pad_token_id=pad_token_id, use_cache=True)
    if params.do_sample:
        kwargs.update(temperature=params.temperature, top_k=params.top_k or None, top_p=params.top_p)
    output = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, **kwargs)  # (B, P + R)
    model.train(was_training)
    P = prompt_ids.shape[1]
    responses = output[:, P:]
    response_mask, ended = response_mask_from_ids(responses, eos_token_id)
    responses = responses.masked_fill(response_mask == 0, pad_token_id)
    query_responses = torch.cat([prompt_ids, responses], dim=1)
    attention_mask = torch.cat([prompt_mask.long(), response_mask], dim=1)
    return Rollout(query_responses, attention_mask, response_mask, ended, P)


def decode_responses(tokenizer, rollout: Rollout) -> list[str]:
    """Response texts without padding or end-of-text."""
    texts = []
    for ids, mask in zip(rollout.responses.tolist(), rollout.response_mask.tolist()):
        kept = [t for t, m in zip(ids, mask) if m and t != tokenizer.eos_token_id]
        texts.append(tokenizer.decode(kept, skip_special_tokens=False))
    return texts


@torch.no_grad()
def sample_responses(model, tokenizer, prompts: Sequence[str], params: SamplingParams,
                     batch_size: int = 64) -> tuple[list[str], list[bool]]:
    """One sampled response per prompt text (encoded without special tokens, left-padded in
    batches of ``batch_size``): the response texts and whether each reached end-of-text."""
    from rlhf.data import collate_prompts

    device = next(model.parameters()).device
    texts: list[str] = []
    ended: list[bool] = []
    for start in range(0, len(prompts), batch_size):
        batch = collate_prompts([{"input_ids": tokenizer(p, add_special_tokens=False)["input_ids"]}
                                 for p in prompts[start:start + batch_size]], tokenizer.pad_token_id)
        rollout = generate(model, batch["input_ids"].to(device), batch["attention_mask"].to(device), params,
                           tokenizer.eos_token_id, tokenizer.pad_token_id)
        texts += decode_responses(tokenizer, rollout)
        ended += rollout.ended.tolist()
    return texts, ended
