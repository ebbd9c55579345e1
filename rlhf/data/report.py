"""What a stage says about its data: the formats its records are in, a warning when a chat model
is trained on text that skips its chat template, and how many examples were truncated."""

from __future__ import annotations

import warnings
from collections import Counter
from typing import Sequence

from rlhf.data.templates import CHAT_TEMPLATE, FORMAT_NAMES, uses_tokenizer_template

APPLY_CHAT_TEMPLATE_HINT = ('write the prompts as messages ([{"role": "user", "content": ...}]) or pass '
                            "--apply_chat_template true to render plain-string and HH prompts with the template")


def format_counts(records: Sequence) -> dict[str, int]:
    """``{format: count}`` over ``records`` (each has ``.format``), most common first."""
    return dict(Counter(r.format for r in records).most_common())


def describe_formats(records: Sequence) -> str:
    """The formats in words with counts, most common first: "chat template (900), plain text (12)"."""
    counts = format_counts(records)
    if not counts:
        return "no records"
    return ", ".join(f"{FORMAT_NAMES.get(name, name)} ({n:,})" for name, n in counts.items())


def main_format(records: Sequence) -> str | None:
    """The most common format (templates.TEXT, HH, CHAT_TEMPLATE or DEFAULT_TEMPLATE), None if empty."""
    counts = format_counts(records)
    return next(iter(counts), None)


def unused_template_message(records: Sequence, tokenizer, path: str) -> str | None:
    """The warning to give when ``tokenizer`` has a chat template and some records do not use it."""
    if not uses_tokenizer_template(tokenizer):
        return None
    others = [r for r in records if r.format != CHAT_TEMPLATE]
    if not others:
        return None
    return (f"{path}: {len(others):,} of {len(records):,} records do not use the tokenizer's chat template "
            f"(they are {describe_formats(others)}), so the model is trained on a format it was not tuned for "
            f"and later stages may prompt it in another; {APPLY_CHAT_TEMPLATE_HINT}")


def warn_if_template_unused(records: Sequence, tokenizer, path: str) -> bool:
    """Warn (UserWarning) as :func:`unused_template_message` says; True if it warned."""
    message = unused_template_message(records, tokenizer, path)
    if message:
        warnings.warn(message, UserWarning, stacklevel=2)
    return message is not None


def truncation_message(path: str, truncated: int, total: int, max_length: int, what: str = "examples") -> str:
    """One line saying how many of ``total`` examples of ``path`` did not fit ``max_length``."""
    return (f"{path}: {truncated:,} of {total:,} {what} are longer than max_length {max_length} tokens and were "
            "truncated (prompt cut from the left, response from the right); raise --max_length, or set "
            "--truncation false to make such a record an error")


def prompt_truncation_message(path: str, too_long: int, total: int, max_prompt_length: int, mode: str) -> str:
    """One line saying how many of ``total`` prompts of ``path`` did not fit ``max_prompt_length``
    and what ``mode`` (tokenize_prompts' prompt_truncation) did with them."""
    done = {"skip": "were left out (prompt_truncation skip)", "left": "were cut from the left",
            "keep_head": "were cut (keeping the template head and the end)"}[mode]
    return (f"{path}: {too_long:,} of {total:,} prompts are longer than max_prompt_length {max_prompt_length} tokens "
            f"and {done}; raise --max_prompt_length to keep them whole")
