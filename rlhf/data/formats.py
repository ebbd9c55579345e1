"""The normalized record types and their loaders: demonstrations (SFT), comparisons (reward
model, DPO), rankings, and prompts (PPO).

Every file format is parsed into one of four small dataclasses, each carrying its
:class:`~rlhf.data.records.Source` so that any error names the file, line and field. The
accepted JSON layouts, the ranking convention and the default template are documented in
docs/data.md; the parse functions below are in the same order as that page.

A text field is either a plain string, used as is, or a conversation (a list of
``{"role", "content"}`` messages) rendered by :mod:`rlhf.data.templates`. When a prompt goes
through a template the replies do too (:func:`~rlhf.data.templates.response_text`), so that
prompt and reply join the way the template expects.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple

from rlhf.data.errors import DataError
from rlhf.data.records import Source, read_records
from rlhf.data.templates import (HH, TEXT, common_message_prefix, hh_to_messages, render_prompt, rendered_format,
                                 response_text, split_hh_dialogue, text_format, validate_messages)

logger = logging.getLogger(__name__)

IN_MEMORY = Source("<in-memory>", 0)
"""The source of a record built in code rather than read from a file."""


@dataclass(frozen=True)
class Demonstration:
    """A prompt and the response a human wrote for it (SFT data)."""

    prompt: str
    completion: str
    source: Source = IN_MEMORY
    labeler: str | None = None
    format: str = TEXT  # how the text was made: templates.TEXT, HH, CHAT_TEMPLATE or DEFAULT_TEMPLATE


@dataclass(frozen=True)
class Comparison:
    """A prompt and two responses, ``chosen`` preferred over ``rejected``.

    ``margin`` is an optional strength of preference (e.g. Llama 2's rating gap), used by a
    margin loss; ``labeler`` lets the collator weight labelers differently; ``weight`` (>= 0,
    None = 1) weights this one comparison, e.g. a new labeler's early label (``rlhf label export``).
    """

    prompt: str
    chosen: str
    rejected: str
    margin: float | None = None
    labeler: str | None = None
    source: Source = IN_MEMORY
    format: str = TEXT
    weight: float | None = None


@dataclass(frozen=True)
class Ranking:
    """K responses to one prompt, ordered by a labeler (InstructGPT collected K=4..9).

    ``ranking`` is a permutation of ``range(len(responses))``, BEST FIRST: ``ranking[0]`` is the
    index of the preferred response, ``ranking[-1]`` of the worst.
    """

    prompt: str
    responses: list[str]
    ranking: list[int]
    labeler: str | None = None
    source: Source = IN_MEMORY
    format: str = TEXT
    weight: float | None = None  # of the whole ranking: each of its pairs inherits it


@dataclass(frozen=True)
class PromptRecord:
    """A prompt alone, for PPO rollouts and evaluation.

    ``raw`` is the prompt as the file wrote it (a string or a message list; for a prompt taken
    from a comparison or ``{"messages"}`` record, the rendered text) and ``fields`` the record's
    other fields (e.g. GSM8K's "answer"): reward functions get both, as in TRL."""

    prompt: str
    source: Source = IN_MEMORY
    format: str = TEXT
    raw: Any = dataclass_field(default=None, compare=False)
    fields: dict = dataclass_field(default_factory=dict, compare=False)


class RecordList(list):
    """A list of loaded records that also remembers the bad records skipped on the way
    (``skipped``, each a :class:`DataError`), so callers can log or assert on them; after
    tokenization also how many examples were ``truncated`` to fit and how many prompts were
    ``skipped_too_long`` (``prompt_truncation="skip"``)."""

    def __init__(self, items: Iterable = (), skipped: list[DataError] | None = None):
        super().__init__(items)
        self.skipped: list[DataError] = skipped if skipped is not None else []
        self.truncated = 0
        self.skipped_too_long = 0


# --- field helpers -----------------------------------------------------------------------------

def _error(source: Source, field: str | None, message: str) -> DataError:
    return DataError(source.path, source.line, field, message)


def _require(raw: dict, field: str, source: Source) -> Any:
    if field not in raw:
        present = ", ".join(sorted(map(str, raw))) or "none"
        raise _error(source, field, f"missing field (fields present: {present})")
    return raw[field]


def _text(value: Any, field: str, source: Source) -> str:
    """A non-blank string: an empty reply or prompt is almost always a data bug."""
    if not isinstance(value, str):
        raise _error(source, field, f"expected a string, got {_type_name(value)}")
    if not value.strip():
        raise _error(source, field, "text is empty or whitespace only")
    return value


def _optional_labeler(raw: dict, source: Source) -> str | None:
    labeler = raw.get("labeler")
    if labeler is not None and not isinstance(labeler, str):
        raise _error(source, "labeler", f"expected a string or null, got {_type_name(labeler)}")
    return labeler


def _optional_weight(raw: dict, source: Source) -> float | None:
    """A record's loss weight: a finite number >= 0, or absent/null (= 1)."""
    weight = raw.get("weight")
    if weight is None:
        return None
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
        raise _error(source, "weight", f"expected a finite number >= 0 or null, got {weight!r}")
    return float(weight)


def _optional_margin(raw: dict, source: Source) -> float | None:
    margin = raw.get("margin")
    if margin is None:
        return None
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin):
        raise _error(source, "margin", f"expected a finite number or null, got {margin!r}")
    return float(margin)


class _Prompt(NamedTuple):
    """A parsed prompt: its text, its format, and ``from_hh`` when an HH-RLHF dialogue string was
    re-rendered with a template (its replies then drop HH's leading space)."""

    text: str
    format: str
    from_hh: bool = False

    @property
    def rendered(self) -> bool:
        return self.format not in (TEXT, HH)


def _prompt_text(value: Any, field: str, source: Source, tokenizer, apply_chat_template: bool) -> _Prompt:
    """A message list is rendered with the generation prompt. A string is used as is, or with
    ``apply_chat_template`` rendered too: an HH dialogue as its turns, other text as one user message."""
    if isinstance(value, list):
        messages = validate_messages(value, source, field)
        if messages[-1]["role"] == "assistant":
            raise _error(source, field, "the last prompt message is the assistant's; a prompt must end "
                                        "with a user (or system) message")
        for i, message in enumerate(messages):
            _text(message["content"], f"{field}[{i}].content", source)
        return _Prompt(render_prompt(messages, tokenizer), rendered_format(tokenizer))
    text = _text(value, field, source)
    if not apply_chat_template:
        return _Prompt(text, text_format(text))
    turns = hh_to_messages(text)
    messages = turns or [{"role": "user", "content": text}]
    return _Prompt(render_prompt(messages, tokenizer), rendered_format(tokenizer), turns is not None)


def _reply(value: Any, field: str, source: Source, tokenizer, prompt: _Prompt) -> str:
    """A reply given as a string or as ``[{"role": "assistant", "content": ...}]``."""
    if isinstance(value, list):
        messages = validate_messages(value, source, field)
        if len(messages) != 1 or messages[0]["role"] != "assistant":
            raise _error(source, field, "expected a string or a list of one assistant message")
        value = messages[0]["content"]
        field = f"{field}[0].content"
    content = _text(value, field, source)
    return _rendered_reply(content, tokenizer, prompt)


def _rendered_reply(content: str, tokenizer, prompt: _Prompt) -> str:
    if not prompt.rendered:
        return content
    if prompt.from_hh and content.startswith(" "):
        content = content[1:]
    return response_text(content, tokenizer)


def _other_fields(raw: dict, used: Iterable[str]) -> dict:
    return {k: v for k, v in raw.items() if k not in set(used)}


def _type_name(value: Any) -> str:
    return {str: "string", list: "list", dict: "object", bool: "boolean", type(None): "null"}.get(
        type(value), type(value).__name__)


# --- parsers: one raw record -> normalized records ---------------------------------------------

def parse_demonstration(raw: dict, source: Source, tokenizer=None, prompt_field: str = "prompt",
                        completion_field: str = "completion", apply_chat_template: bool = False) -> Demonstration:
    """``{"prompt", "completion"}`` (strings, or TRL's conversational lists), or ``{"messages"}``
    whose last message is the assistant's reply."""
    labeler = _optional_labeler(raw, source)
    if prompt_field not in raw and "messages" in raw:
        messages = validate_messages(raw["messages"], source, "messages")
        if messages[-1]["role"] != "assistant":
            raise _error(source, "messages", "the last message must be the assistant's (it is the completion)")
        if len(messages) < 2:
            raise _error(source, "messages", "needs at least one message before the assistant's reply")
        prompt = _prompt_text(messages[:-1], "messages", source, tokenizer, False)
        completion = _reply(messages[-1:], "messages", source, tokenizer, prompt)
        return Demonstration(prompt.text, completion, source, labeler, prompt.format)
    prompt = _prompt_text(_require(raw, prompt_field, source), prompt_field, source, tokenizer, apply_chat_template)
    completion = _reply(_require(raw, completion_field, source), completion_field, source, tokenizer, prompt)
    return Demonstration(prompt.text, completion, source, labeler, prompt.format)


def parse_comparison(raw: dict, source: Source, tokenizer=None, apply_chat_template: bool = False,
                     prompt_field: str = "prompt", chosen_field: str = "chosen",
                     rejected_field: str = "rejected") -> Comparison:
    """``{"prompt", "chosen", "rejected"}`` (+ "margin", "labeler", "weight"); ``{"chosen", "rejected"}`` as
    HH-RLHF dialogue strings; or either layout with message lists instead of strings. The three
    field names can be mapped (e.g. ``chosen_field="response_j"``); errors name the mapped field."""
    margin, labeler = _optional_margin(raw, source), _optional_labeler(raw, source)
    weight = _optional_weight(raw, source)
    fields = (chosen_field, rejected_field)
    chosen_value, rejected_value = _require(raw, chosen_field, source), _require(raw, rejected_field, source)
    prompt_value = raw.get(prompt_field)
    if isinstance(chosen_value, list) or isinstance(rejected_value, list) or isinstance(prompt_value, list):
        prefix = validate_messages(prompt_value, source, prompt_field) if prompt_value is not None else []
        chosen_messages = prefix + validate_messages(chosen_value, source, chosen_field)
        rejected_messages = prefix + validate_messages(rejected_value, source, rejected_field)
        shared, chosen_message, rejected_message = common_message_prefix(chosen_messages, rejected_messages,
                                                                         source, fields)
        prompt = _prompt_text(shared, prompt_field if prompt_value is not None else chosen_field, source,
                              tokenizer, False)
        chosen = _reply([chosen_message], chosen_field, source, tokenizer, prompt)
        rejected = _reply([rejected_message], rejected_field, source, tokenizer, prompt)
    elif prompt_value is not None:
        prompt = _prompt_text(prompt_value, prompt_field, source, tokenizer, apply_chat_template)
        chosen = _reply(chosen_value, chosen_field, source, tokenizer, prompt)
        rejected = _reply(rejected_value, rejected_field, source, tokenizer, prompt)
    else:
        prompt, chosen, rejected = _hh_comparison(chosen_value, rejected_value, source, tokenizer,
                                                  apply_chat_template, fields)
    if chosen == rejected:
        raise _error(source, rejected_field, f"{chosen_field} and {rejected_field} are identical")
    return Comparison(prompt.text, chosen, rejected, margin, labeler, source, prompt.format, weight)


def _hh_comparison(chosen_value: Any, rejected_value: Any, source: Source, tokenizer, apply_chat_template: bool,
                   fields: tuple[str, str]) -> tuple[_Prompt, str, str]:
    """HH-RLHF: whole dialogues, split at their shared prompt; with ``apply_chat_template`` the
    prompt's turns are rendered with the template. A blank final turn is kept, since there "say
    nothing" is a real answer a crowdworker preferred (4 chosen replies in harmless-base test are " ")."""
    chosen_field, rejected_field = fields
    _text(chosen_value, chosen_field, source)
    _text(rejected_value, rejected_field, source)
    if chosen_value == rejected_value:
        raise _error(source, rejected_field, f"{chosen_field} and {rejected_field} are identical")
    prompt, chosen, rejected = split_hh_dialogue(chosen_value, rejected_value, source, fields)
    turns = hh_to_messages(prompt) if apply_chat_template else None
    if turns is None:
        return _Prompt(prompt, HH), chosen, rejected
    rendered = _Prompt(render_prompt(turns, tokenizer), rendered_format(tokenizer), True)
    return rendered, _rendered_reply(chosen, tokenizer, rendered), _rendered_reply(rejected, tokenizer, rendered)


def parse_ranking(raw: dict, source: Source, tokenizer=None, apply_chat_template: bool = False,
                  prompt_field: str = "prompt") -> Ranking:
    """``{"prompt", "responses": [...], "ranking": [...]}`` (+ "labeler", "weight"), ranking best first."""
    labeler, weight = _optional_labeler(raw, source), _optional_weight(raw, source)
    prompt = _prompt_text(_require(raw, prompt_field, source), prompt_field, source, tokenizer, apply_chat_template)
    responses_value = _require(raw, "responses", source)
    if not isinstance(responses_value, list) or len(responses_value) < 2:
        raise _error(source, "responses", "expected a list of at least 2 responses")
    responses = [_reply(r, f"responses[{i}]", source, tokenizer, prompt) for i, r in enumerate(responses_value)]
    first_seen: dict[str, int] = {}
    for i, response in enumerate(responses):
        if response in first_seen:
            raise _error(source, "responses", f"responses {first_seen[response]} and {i} are identical")
        first_seen[response] = i
    ranking = _require(raw, "ranking", source)
    k = len(responses)
    if (not isinstance(ranking, list) or any(isinstance(r, bool) or not isinstance(r, int) for r in ranking)
            or sorted(ranking) != list(range(k))):
        raise _error(source, "ranking", f"expected a permutation of 0..{k - 1} (indices into responses, "
                                        f"best first), got {ranking!r}")
    return Ranking(prompt.text, responses, list(ranking), labeler, source, prompt.format, weight)


def parse_prompt(raw: dict, source: Source, tokenizer=None, prompt_field: str = "prompt",
                 apply_chat_template: bool = False) -> PromptRecord:
    """``{"prompt"}`` as a string or messages; a comparison or ``{"messages"}`` record also
    gives its prompt, so PPO can draw prompts from preference or SFT files directly. The record's
    other fields are kept in ``fields`` for reward functions."""
    if prompt_field not in raw:
        if "chosen" in raw and "rejected" in raw:
            pair = parse_comparison(raw, source, tokenizer, apply_chat_template)
            return PromptRecord(pair.prompt, source, pair.format, pair.prompt,
                                _other_fields(raw, ("prompt", "chosen", "rejected")))
        if "messages" in raw:
            demo = parse_demonstration(raw, source, tokenizer)
            return PromptRecord(demo.prompt, source, demo.format, demo.prompt, _other_fields(raw, ("messages",)))
    value = _require(raw, prompt_field, source)
    prompt = _prompt_text(value, prompt_field, source, tokenizer, apply_chat_template)
    return PromptRecord(prompt.text, source, prompt.format, value, _other_fields(raw, (prompt_field,)))


def rankings_to_comparisons(rankings: Iterable[Ranking]) -> list[Comparison]:
    """Expand each ranking of K responses into its K*(K-1)/2 pairs, chosen = the better ranked.

    InstructGPT (Ouyang et al. 2022, sec. 3.5) trains on all pairs of a ranking; keeping
    them adjacent in the returned list lets a caller batch them together as it did. Each pair
    inherits the ranking's labeler and ``weight`` (the label's weight is the same for all of them).
    """
    pairs = []
    for r in rankings:
        for i, better in enumerate(r.ranking):
            for worse in r.ranking[i + 1:]:
                pairs.append(Comparison(r.prompt, r.responses[better], r.responses[worse], None, r.labeler, r.source,
                                        r.format, r.weight))
    return pairs


# --- loaders -----------------------------------------------------------------------------------

def _load(path: str | Path, parse: Callable[[dict, Source], list], skip_bad_records: bool) -> RecordList:
    """Parse every record; a bad one raises, or with ``skip_bad_records`` is logged and skipped."""
    loaded, skipped = RecordList(), []
    counts = {"read": 0, "unreadable": 0}

    def bad(error: DataError) -> None:
        if not skip_bad_records:
            raise error
        logger.warning("skipping bad record: %s", error)
        skipped.append(error)

    def unreadable(error: DataError) -> None:  # a line that is not JSON, not UTF-8, not an object
        counts["unreadable"] += 1
        bad(error)

    for raw, source in read_records(path, on_error=unreadable):
        counts["read"] += 1
        try:
            loaded.extend(parse(raw, source))
        except DataError as error:
            bad(error)
    if skipped:
        total = counts["read"] + counts["unreadable"]
        logger.warning("%s: skipped %d bad records of %d", path, len(skipped), total)
        if not loaded:
            raise DataError(str(path), None, None, f"all {total} records are bad; first: {skipped[0]}")
    loaded.skipped = skipped
    return loaded


def load_demonstrations(path: str | Path, tokenizer=None, skip_bad_records: bool = False,
                        prompt_field: str = "prompt", completion_field: str = "completion",
                        apply_chat_template: bool = False) -> RecordList:
    """Load SFT demonstrations. ``prompt_field``/``completion_field`` map other layouts, e.g. GSM8K:
    ``load_demonstrations(path, prompt_field="question", completion_field="answer", apply_chat_template=True)``."""
    return _load(path, lambda raw, src: [parse_demonstration(raw, src, tokenizer, prompt_field, completion_field,
                                                             apply_chat_template)], skip_bad_records)


def load_comparisons(path: str | Path, tokenizer=None, skip_bad_records: bool = False,
                     apply_chat_template: bool = False, prompt_field: str = "prompt", chosen_field: str = "chosen",
                     rejected_field: str = "rejected") -> RecordList:
    """Load pairwise comparisons; ranking records (detected per record by "responses"/"ranking")
    are expanded to all their pairs with :func:`rankings_to_comparisons`."""

    def parse(raw: dict, source: Source) -> list[Comparison]:
        if "responses" in raw or "ranking" in raw:
            return rankings_to_comparisons([parse_ranking(raw, source, tokenizer, apply_chat_template, prompt_field)])
        return [parse_comparison(raw, source, tokenizer, apply_chat_template, prompt_field, chosen_field,
                                 rejected_field)]

    return _load(path, parse, skip_bad_records)


def load_rankings(path: str | Path, tokenizer=None, skip_bad_records: bool = False,
                  apply_chat_template: bool = False, prompt_field: str = "prompt") -> RecordList:
    """Load rankings of K responses (best first), unexpanded."""
    return _load(path, lambda raw, src: [parse_ranking(raw, src, tokenizer, apply_chat_template, prompt_field)],
                 skip_bad_records)


def load_prompts(path: str | Path, tokenizer=None, skip_bad_records: bool = False, prompt_field: str = "prompt",
                 apply_chat_template: bool = False) -> RecordList:
    """Load prompts for PPO; comparison and ``{"messages"}`` files give their prompts too."""
    return _load(path, lambda raw, src: [parse_prompt(raw, src, tokenizer, prompt_field, apply_chat_template)],
                 skip_bad_records)


GSM8K_SOLVERS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


def load_gsm8k_solution_comparisons(path: str | Path, tokenizer=None, include_ground_truth: bool = True,
                                    skip_bad_records: bool = False, apply_chat_template: bool = True) -> RecordList:
    """Correct-vs-incorrect pairs from GSM8K's ``example_model_solutions.jsonl(.gz)``.

    Each record holds a question, a reference solution (``ground_truth``) and four model
    solutions labelled ``is_correct`` by checking the final answer. Every distinct correct
    solution (with the reference when ``include_ground_truth``) is paired with every distinct
    incorrect one; a question with none of either gives no pairs. The labeler is
    ``"gsm8k/is_correct"``: an automatic check, not a human judgement (see the file's SOURCE.md).
    """

    def parse(raw: dict, source: Source) -> list[Comparison]:
        prompt = _prompt_text(_require(raw, "question", source), "question", source, tokenizer, apply_chat_template)
        correct, incorrect = [], []
        if include_ground_truth:
            correct.append(_text(_require(raw, "ground_truth", source), "ground_truth", source))
        for solver in GSM8K_SOLVERS:
            entry = _require(raw, solver, source)
            if not isinstance(entry, dict) or not isinstance(entry.get("is_correct"), bool):
                raise _error(source, solver, 'expected {"is_correct": bool, "solution": str}')
            solution = _text(entry.get("solution"), f"{solver}.solution", source)
            (correct if entry["is_correct"] else incorrect).append(solution)
        correct, incorrect = list(dict.fromkeys(correct)), list(dict.fromkeys(incorrect))
        correct = [_rendered_reply(c, tokenizer, prompt) for c in correct]
        incorrect = [_rendered_reply(c, tokenizer, prompt) for c in incorrect]
        return [Comparison(prompt.text, good, bad, None, "gsm8k/is_correct", source, prompt.format)
                for good in correct for bad in incorrect if good != bad]

    return _load(path, parse, skip_bad_records)
