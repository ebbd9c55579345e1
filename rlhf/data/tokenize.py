"""Tokenize normalized records into token-id lists, with one documented truncation policy.

Prompt and response are encoded SEPARATELY (``add_special_tokens=False``) and concatenated,
never encoded as one string: PPO generates after the prompt's own tokens, so SFT, the reward
model and DPO must see the same prompt tokens, and a BPE merge across the boundary would
make them differ. The end-of-text token is appended to every response, so the model learns
to stop and the reward model scores a finished answer.

Truncation policy, when prompt + response exceed ``max_length`` (L):

1. The prompt is cut from the LEFT, keeping its end (the latest turns, which the response
   answers; HH-RLHF dialogues are long), but it keeps at least ``min(len(prompt), L // 4)``
   tokens (and at least one), so a long response cannot erase its context.
2. If the response is still too long, it is cut from the RIGHT and so loses its
   end-of-text token. For a comparison, both responses share the one truncated prompt.

With ``truncation=False`` a record that does not fit is a :class:`DataError` naming file,
line and field; with ``skip_bad_records=True`` as well, it is logged and dropped instead.
The returned list counts the examples that were cut (``RecordList.truncated``), so a stage
can say so.

A PPO prompt alone (:func:`tokenize_prompts`) has its own ``prompt_truncation``: "keep_head"
cuts from the middle, keeping the template's head (system header and start of the user turn)
and the end the policy continues from; "left" cuts from the left; "skip" drops the prompt.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable, Sequence

from rlhf.data.errors import DataError
from rlhf.data.formats import Comparison, Demonstration, PromptRecord, RecordList
from rlhf.data.templates import template_head, uses_tokenizer_template

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
"""Label value that PyTorch's cross-entropy ignores: no loss on prompt or padding tokens."""

PROMPT_TRUNCATION_MODES = ("keep_head", "left", "skip")


def truncate_pair(prompt_ids: list[int], response_len: int, max_length: int) -> tuple[list[int], int]:
    """Apply the policy: return the kept prompt tokens and how many response tokens fit."""
    if len(prompt_ids) + response_len <= max_length:
        return prompt_ids, response_len
    min_prompt = min(len(prompt_ids), max(1, max_length // 4))
    keep_prompt = max(max_length - response_len, min_prompt)
    return prompt_ids[len(prompt_ids) - keep_prompt:], max_length - keep_prompt


def _encode(tokenizer, texts: list[str]) -> list[list[int]]:
    """Encode a batch of texts without BOS/EOS (the fast tokenizer encodes a list in parallel)."""
    if not texts:
        return []
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def _eos_id(tokenizer) -> int:
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no end-of-text (eos) token; every response must end with one")
    return tokenizer.eos_token_id


def _check_max_length(max_length: int) -> None:
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 (one prompt and one response token), got {max_length}")


def _too_long(record, field: str, n: int, max_length: int) -> DataError:
    return DataError(record.source.path, record.source.line, field,
                     f"sequence of {n} tokens exceeds max_length {max_length}")


def _collect(records: Sequence, build: Callable, skip_bad_records: bool, too_long: Callable[[int], bool]
             ) -> RecordList:
    """Build one example per record (``build`` may return None to drop it); a DataError raises,
    or is logged and skipped. ``too_long(i)``: record i does not fit, so is truncated if kept."""
    out, skipped = RecordList(), []
    for i, record in enumerate(records):
        try:
            example = build(i, record)
            if example is not None:
                out.append(example)
                out.truncated += too_long(i)
        except DataError as error:
            if not skip_bad_records:
                raise
            logger.warning("skipping record: %s", error)
            skipped.append(error)
    if skipped:
        logger.warning("skipped %d of %d records at tokenization", len(skipped), len(records))
    out.skipped = skipped
    return out


def tokenize_demonstrations(demos: Iterable[Demonstration], tokenizer, max_length: int, truncation: bool = True,
                            completion_only_loss: bool = True, skip_bad_records: bool = False) -> RecordList:
    """SFT examples: ``input_ids`` = prompt + completion + eos, and ``labels`` equal to
    ``input_ids`` with -100 on the prompt (unless ``completion_only_loss=False``)."""
    _check_max_length(max_length)
    demos = list(demos)
    eos = _eos_id(tokenizer)
    prompts = _encode(tokenizer, [d.prompt for d in demos])
    completions = [ids + [eos] for ids in _encode(tokenizer, [d.completion for d in demos])]

    def build(i: int, demo: Demonstration) -> dict:
        prompt_ids, completion_ids = prompts[i], completions[i]
        n = len(prompt_ids) + len(completion_ids)
        if n > max_length and not truncation:
            raise _too_long(demo, "completion", n, max_length)
        prompt_ids, keep = truncate_pair(prompt_ids, len(completion_ids), max_length)
        completion_ids = completion_ids[:keep]
        prompt_labels = prompt_ids if not completion_only_loss else [IGNORE_INDEX] * len(prompt_ids)
        return {"input_ids": prompt_ids + completion_ids, "labels": prompt_labels + completion_ids,
                "source": demo.source}

    return _collect(demos, build, skip_bad_records, lambda i: len(prompts[i]) + len(completions[i]) > max_length)


def tokenize_comparisons(comparisons: Iterable[Comparison], tokenizer, max_length: int, truncation: bool = True,
                         skip_bad_records: bool = False) -> RecordList:
    """Pair examples: ``prompt_ids``, and ``chosen_ids``/``rejected_ids`` each ending in eos, such
    that prompt + either response fits ``max_length``; plus ``margin``, ``labeler``, ``weight``, ``source``."""
    _check_max_length(max_length)
    comparisons = list(comparisons)
    eos = _eos_id(tokenizer)
    prompts = _encode(tokenizer, [c.prompt for c in comparisons])
    chosen = [ids + [eos] for ids in _encode(tokenizer, [c.chosen for c in comparisons])]
    rejected = [ids + [eos] for ids in _encode(tokenizer, [c.rejected for c in comparisons])]

    def build(i: int, comparison: Comparison) -> dict:
        prompt_ids, chosen_ids, rejected_ids = prompts[i], chosen[i], rejected[i]
        if not truncation:
            for field, ids in (("chosen", chosen_ids), ("rejected", rejected_ids)):
                if len(prompt_ids) + len(ids) > max_length:
                    raise _too_long(comparison, field, len(prompt_ids) + len(ids), max_length)
        prompt_ids, keep = truncate_pair(prompt_ids, max(len(chosen_ids), len(rejected_ids)), max_length)
        return {"prompt_ids": prompt_ids, "chosen_ids": chosen_ids[:keep], "rejected_ids": rejected_ids[:keep],
                "margin": comparison.margin, "labeler": comparison.labeler, "weight": comparison.weight,
                "source": comparison.source}

    def too_long(i: int) -> bool:
        return len(prompts[i]) + max(len(chosen[i]), len(rejected[i])) > max_length

    return _collect(comparisons, build, skip_bad_records, too_long)


def tokenize_prompts(prompts: Iterable[PromptRecord], tokenizer, max_prompt_length: int, truncation: bool = True,
                     skip_bad_records: bool = False, prompt_truncation: str = "keep_head") -> RecordList:
    """Prompt examples for generation: ``input_ids`` (no eos), ``raw_prompt`` and ``fields`` (the
    prompt as written and the record's other fields, for reward functions) and ``source``.

    A prompt over ``max_prompt_length`` is cut as ``prompt_truncation`` says ("keep_head",
    "left") or dropped ("skip"); the returned list counts them in ``truncated`` and
    ``skipped_too_long``. With ``truncation=False`` it is a DataError instead."""
    if max_prompt_length < 1:
        raise ValueError(f"max_prompt_length must be at least 1, got {max_prompt_length}")
    if prompt_truncation not in PROMPT_TRUNCATION_MODES:
        raise ValueError(f"prompt_truncation must be one of {', '.join(PROMPT_TRUNCATION_MODES)}, "
                         f"got {prompt_truncation!r}")
    prompts = list(prompts)
    encoded = _encode(tokenizer, [p.prompt for p in prompts])
    heads = _head_ids(tokenizer) if prompt_truncation == "keep_head" else []
    dropped = []

    def build(i: int, prompt: PromptRecord) -> dict | None:
        ids = encoded[i]
        if len(ids) > max_prompt_length:
            if not truncation:
                raise _too_long(prompt, "prompt", len(ids), max_prompt_length)
            if prompt_truncation == "skip":
                dropped.append(i)
                return None
            ids = _cut_prompt(ids, max_prompt_length, heads)
        return {"input_ids": ids, "raw_prompt": prompt.prompt if prompt.raw is None else prompt.raw,
                "fields": dict(prompt.fields), "source": prompt.source}

    out = _collect(prompts, build, skip_bad_records, lambda i: len(encoded[i]) > max_prompt_length)
    out.skipped_too_long = len(dropped)
    if prompts and dropped and not out:
        raise DataError(prompts[0].source.path, None, None,
                        f"all {len(dropped)} prompts are longer than max_prompt_length {max_prompt_length} and "
                        "prompt_truncation is skip: raise --max_prompt_length or choose keep_head")
    return out


def _head_ids(tokenizer) -> list[list[int]]:
    """Token ids of the template heads a prompt may start with: the tokenizer's chat template's
    and the default template's ("\\n\\nHuman: ")."""
    heads = [template_head(None)]
    if uses_tokenizer_template(tokenizer):
        heads.insert(0, template_head(tokenizer))
    return [ids for ids in _encode(tokenizer, [h for h in heads if h])]


def _matching_prefix(ids: list[int], head: list[int]) -> int:
    n = 0
    while n < min(len(ids), len(head)) and ids[n] == head[n]:
        n += 1
    return n


def _cut_prompt(ids: list[int], max_prompt_length: int, heads: list[list[int]]) -> list[int]:
    """Keep the prompt's leading tokens that match a template head (if they take at most half of
    ``max_prompt_length``) and as many of its last tokens as still fit; the middle goes.
    The head is matched token by token, since its last token may merge with the content's first."""
    keep_head = max((_matching_prefix(ids, head) for head in heads), default=0)
    if keep_head > max_prompt_length // 2:
        keep_head = 0
    return ids[:keep_head] + ids[len(ids) - (max_prompt_length - keep_head):]
