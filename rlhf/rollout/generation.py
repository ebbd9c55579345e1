"""Sampling responses from a policy: batched, left-padded prompts, KV cache, stop at end-of-text.

Generation itself is transformers' ``generate``; what is ours is the bookkeeping PPO needs:
where each response starts and ends, a mask of its tokens, whether it reached end-of-text
(a response cut off by ``max_new_tokens`` can be penalised), and optionally the log-probs of
the sampled tokens, recorded while sampling so that PPO needs no extra forward pass for
pi_old (TRL and OpenRLHF's vLLM path do the same).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from transformers import (GenerationConfig, LogitsProcessor, LogitsProcessorList, TemperatureLogitsWarper,
                          TopKLogitsWarper, TopPLogitsWarper)

from rlhf.models.shared_prefix import PrefixNotShared, prefix_cache, prefix_groups


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
    # (B, R) log pi(token) at the sampling temperature, 0 after end-of-text; None if not recorded.
    logprobs: torch.Tensor | None = None

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


class SampledLogprobRecorder(LogitsProcessor):
    """Records log softmax(logits / T) of each sampled token while ``generate`` runs.

    A logits processor sees the distribution of step t before its token is drawn and, at step
    t + 1, the ids that now end with that token: it keeps one (B, V) row of log-probs pending
    and gathers it one call later (memory B x V, not B x R x V). It runs first, before the
    temperature and top-k/top-p warpers (``sampling_processors``), so the recorded numbers are
    those of the full distribution at temperature T, the same as a forward pass computes.
    """

    def __init__(self, temperature: float):
        self.temperature = temperature
        self.pending: torch.Tensor | None = None  # (B, V) log-probs of the step whose token is not drawn yet
        self.steps: list[torch.Tensor] = []  # (B,) per finished step

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.pending is not None:
            self.steps.append(self.pending.gather(-1, input_ids[:, -1:]).squeeze(-1))
        self.pending = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        return scores

    def finish(self, responses: torch.Tensor) -> torch.Tensor:
        """The (B, R) log-probs of ``responses``, the R tokens drawn in this generation."""
        if self.pending is not None:
            self.steps.append(self.pending.gather(-1, responses[:, -1:]).squeeze(-1))
            self.pending = None
        if len(self.steps) != responses.shape[1]:
            raise RuntimeError(f"recorded {len(self.steps)} sampling steps for {responses.shape[1]} response tokens")
        return torch.stack(self.steps, dim=1)


class InverseCDFSampler(LogitsProcessor):
    """Draws each row's next token from softmax(scores) and returns scores whose argmax is that token.

    Inverse transform sampling: one uniform number per row against the cumulative probabilities
    (in float64, so that no token's share rounds away). It draws from the same distribution as
    transformers' ``torch.multinomial``, which on a CPU draws one exponential number per vocabulary
    entry: with a 50k vocabulary that was a quarter of the time of generation. Tokens of zero
    probability (cut by top-k or top-p) are never drawn. Uses torch's global RNG, as multinomial did.
    """

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        cdf = torch.softmax(scores.float(), dim=-1).double().cumsum(-1)  # (B, V)
        total = cdf[:, -1:]  # (B, 1), 1 up to rounding
        if not bool(torch.isfinite(total).all()):
            raise ValueError("the next-token distribution holds inf or NaN (are the policy's weights finite?)")
        u = torch.rand(total.shape, dtype=total.dtype, device=total.device) * total  # (B, 1) in [0, total)
        tokens = torch.searchsorted(cdf, u, right=True)  # first entry whose cdf exceeds u: a positive probability
        last = torch.searchsorted(cdf, total.contiguous())  # the last token of positive probability
        tokens = torch.minimum(tokens, last)  # (B, 1), should u have rounded up to total
        return torch.full_like(scores, float("-inf")).scatter_(1, tokens, 0.0)


def sampling_processors(params: SamplingParams) -> list[LogitsProcessor]:
    """Temperature, top-k and top-p warpers in transformers' own order, then the draw."""
    processors: list[LogitsProcessor] = []
    if params.temperature != 1.0:
        processors.append(TemperatureLogitsWarper(params.temperature))
    if params.top_k:
        processors.append(TopKLogitsWarper(params.top_k))
    if params.top_p < 1.0:
        processors.append(TopPLogitsWarper(params.top_p))
    return processors + [InverseCDFSampler()]


def shared_prompt_cache(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> dict:
    """``generate`` keyword arguments handing it the KV cache of the prompts but their last token, run
    once per distinct prompt (GRPO's G answers to each); {} when the prompts do not repeat. generate
    then runs only each row's last prompt token before decoding (rlhf/models/shared_prefix.py)."""
    groups = prefix_groups(model, prompt_ids, prompt_mask, prompt_ids.shape[1] - 1)
    if groups is None:
        return {}
    try:
        return prefix_cache(model, prompt_ids, prompt_mask, prompt_ids.shape[1] - 1, groups)
    except PrefixNotShared:
        return {}


def can_record_logprobs(params: SamplingParams) -> bool:
    """Recorded log-probs equal a forward pass's only when nothing edits the logits before the
    recorder: ``min_new_tokens`` masks end-of-text first, so it falls back to the forward."""
    return params.do_sample and params.min_new_tokens == 0


@torch.no_grad()
def generate(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, params: SamplingParams,
             eos_token_id: int, pad_token_id: int, record_logprobs: bool = False) -> Rollout:
    """Sample one response per left-padded prompt. Sampling uses torch's global RNG, so a
    seeded run samples the same responses. With ``record_logprobs`` (and
    ``can_record_logprobs(params)``) the rollout carries the sampled tokens' log-probs.

    The generation config is built from ``params`` alone: a model's own defaults (a
    repetition penalty, say) would make PPO sample from another distribution than pi."""
    was_training = model.training
    model.eval()
    # Greedy decoding of scores our processors have already sampled from: transformers then picks the
    # drawn token. No model default (top-50, a repetition penalty) applies: the config holds only these.
    config = GenerationConfig(max_new_tokens=params.max_new_tokens, min_new_tokens=params.min_new_tokens,
                              do_sample=False, eos_token_id=eos_token_id, pad_token_id=pad_token_id, use_cache=True)
    recorder = SampledLogprobRecorder(params.temperature) if record_logprobs and can_record_logprobs(params) else None
    processors = ([recorder] if recorder else []) + (sampling_processors(params) if params.do_sample else [])
    output = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=config,
                            logits_processor=LogitsProcessorList(processors),
                            **shared_prompt_cache(model, prompt_ids, prompt_mask))  # (B, P + R)
    model.train(was_training)
    P = prompt_ids.shape[1]
    responses = output[:, P:]
    response_mask, ended = response_mask_from_ids(responses, eos_token_id)
    logprobs = recorder.finish(responses).masked_fill(response_mask == 0, 0.0) if recorder else None
    responses = responses.masked_fill(response_mask == 0, pad_token_id)
    query_responses = torch.cat([prompt_ids, responses], dim=1)
    attention_mask = torch.cat([prompt_mask.long(), response_mask], dim=1)
    return Rollout(query_responses, attention_mask, response_mask, ended, P, logprobs)


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
