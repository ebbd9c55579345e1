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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from rlhf.data.errors import DataError
from rlhf.data.records import Source, read_records
from rlhf.data.templates import (common_message_prefix, render_prompt, response_text, split_hh_dialogue,
                                 validate_messages)

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


@dataclass(frozen=True)
class Comparison:
    """A prompt and two responses, ``chosen`` preferred over ``rejected``.

    ``margin`` is an optional strength of preference (e.g. Llama 2's rating gap), used by a
    margin loss; ``labeler`` lets the collator weight labelers differently.
    """

    prompt: str
    chosen: str
    rejected: str
    margin: float | None = None
    labeler: str | None = None
    source: Source = IN_MEMORY


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


@dataclass(frozen=True)
class PromptRecord:
    """A prompt alone, for PPO rollouts and evaluation."""

    prompt: str
    source: Source = IN_MEMORY


class RecordList(list):
    """A list of loaded records that also remembers the bad records skipped on the way
    (``skipped``, each a :class:`DataError`), so callers can log or assert on them."""

    def __init__(self, items: Iterable = (), skipped: list[DataError] | None = None):
        super().__init__(items)
        self.skipped: list[DataError] = skipped if skipped is not None else []


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


def _optional_margin(raw: dict, source: Source) -> float | None:
    margin = raw.get("margin")
    if margin is None:
        return None
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin):
        raise _error(source, "margin", f"expected a finite number or null, got {margin!r}")
    return float(margin)


def _prompt_text(value: Any, field: str, source: Source, tokenizer, as_user_turn: bool) -> tuple[str, bool]:
    """Return ``(prompt, rendered)``: a string is used as is (or wrapped as one user turn when
    ``as_user_turn``); a message list is rendered with the generation prompt."""
    if isinstance(value, list):
        messages = validate_messages(value, source, field)
        if messages[-1]["role"] == "assistant":
            raise _error(source, field, "the last prompt message is the assistant's; a prompt must end "
                                        "with a user (or system) message")
        for i, message in enumerate(messages):
            _text(message["content"], f"{field}[{i}].content", source)
        return render_prompt(messages, tokenizer), True
    text = _text(value, field, source)
    if as_user_turn:
        return render_prompt([{"role": "user", "content": text}], tokenizer), True
    return text, False


def _reply(value: Any, field: str, source: Source, tokenizer, rendered: bool) -> str:
    """A reply given as a string or as ``[{"role": "assistant", "content": ...}]``."""
    if isinstance(value, list):
        messages = validate_messages(value, source, field)
        if len(messages) != 1 or messages[0]["role"] != "assistant":
            raise _error(source, field, "expected a string or a list of one assistant message")
        value = messages[0]["content"]
        field = f"{field}[0].content"
    content = _text(value, field, source)
    return response_text(content, tokenizer) if rendered else content


def _type_name(value: Any) -> str:
    return {str: "string", list: "list", dict: "object", bool: "boolean", type(None): "null"}.get(
        type(value), type(value).__name__)


# --- parsers: one raw record -> normalized records ---------------------------------------------

def parse_demonstration(raw: dict, source: Source, tokenizer=None, prompt_field: str = "prompt",
                        completion_field: str = "completion", as_user_turn: bool = False) -> Demonstration:
    """``{"prompt", "completion"}`` (strings, or TRL's conversational lists), or ``{"messages"}``
    whose last message is the assistant's reply."""
    labeler = _optional_labeler(raw, source)
    if prompt_field not in raw and "messages" in raw:
        messages = validate_messages(raw["messages"], source, "messages")
        if messages[-1]["role"] != "assistant":
            raise _error(source, "messages", "the last message must be the assistant's (it is the completion)")
        if len(messages) < 2:
            raise _error(source, "messages", "needs at least one message before the assistant's reply")
        prompt, rendered = _prompt_text(messages[:-1], "messages", source, tokenizer, False)
        completion = _reply(messages[-1:], "messages", source, tokenizer, rendered)
        return Demonstration(prompt, completion, source, labeler)
    prompt, rendered = _prompt_text(_require(raw, prompt_field, source), prompt_field, source, tokenizer,
                                    as_user_turn)
    completion = _reply(_require(raw, completion_field, source), completion_field, source, tokenizer, rendered)
    return Demonstration(prompt, completion, source, labeler)


def parse_comparison(raw: dict, source: Source, tokenizer=None, as_user_turn: bool = False) -> Comparison:
    """``{"prompt", "chosen", "rejected"}`` (+ "margin", "labeler"); ``{"chosen", "rejected"}`` as
    HH-RLHF dialogue strings; or either layout with message lists instead of strings."""
    margin, labeler = _optional_margin(raw, source), _optional_labeler(raw, source)
    chosen_value, rejected_value = _require(raw, "chosen", source), _require(raw, "rejected", source)
    prompt_value = raw.get("prompt")
    if isinstance(chosen_value, list) or isinstance(rejected_value, list) or isinstance(prompt_value, list):
        prefix = validate_messages(prompt_value, source, "prompt") if prompt_value is not None else []
        chosen_messages = prefix + validate_messages(chosen_value, source, "chosen")
        rejected_messages = prefix + validate_messages(rejected_value, source, "rejected")
        shared, chosen_message, rejected_message = common_message_prefix(chosen_messages, rejected_messages, source)
        prompt, _ = _prompt_text(shared, "prompt" if prompt_value is not None else "chosen", source, tokenizer, False)
        chosen = _reply([chosen_message], "chosen", source, tokenizer, True)
        rejected = _reply([rejected_message], "rejected", source, tokenizer, True)
    elif prompt_value is not None:
        prompt, rendered = _prompt_text(prompt_value, "prompt", source, tokenizer, as_user_turn)
        chosen = _reply(chosen_value, "chosen", source, tokenizer, rendered)
        rejected = _reply(rejected_value, "rejected", source, tokenizer, rendered)
    else:
        # HH-RLHF: whole dialogues; a blank final turn is kept, since there "say nothing" is a
        # real answer a crowdworker preferred (4 chosen replies in harmless-base test are " ").
        _text(chosen_value, "chosen", source)
        _text(rejected_value, "rejected", source)
        if chosen_value == rejected_value:
            raise _error(source, "rejected", "chosen and rejected are identical")
        prompt, chosen, rejected = split_hh_dialogue(chosen_value, rejected_value, source)
    if chosen == rejected:
        raise _error(source, "rejected", "chosen and rejected are identical")
    return Comparison(prompt, chosen, rejected, margin, labeler, source)


def parse_ranking(raw: dict, source: Source, tokenizer=None, as_user_turn: bool = False) -> Ranking:
    """``{"prompt", "responses": [...], "ranking": [...]}`` (+ "labeler"), ranking best first."""
    labeler = _optional_labeler(raw, source)
    prompt, rendered = _prompt_text(_require(raw, "prompt", source), "prompt", source, tokenizer, as_user_turn)
    responses_value = _require(raw, "responses", source)
    if not isinstance(responses_value, list) or len(responses_value) < 2:
        raise _error(source, "responses", "expected a list of at least 2 responses")
    responses = [_reply(r, f"responses[{i}]", source, tokenizer, rendered) for i, r in enumerate(responses_value)]
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
    return Ranking(prompt, responses, list(ranking), labeler, source)


def parse_prompt(raw: dict, source: Source, tokenizer=None, prompt_field: str = "prompt",
                 as_user_turn: bool = False) -> PromptRecord:
    """``{"prompt"}`` as a string or messages; a comparison or ``{"messages"}`` record also
    gives its prompt, so PPO can draw prompts from preference or SFT files directly."""
    if prompt_field not in raw:
        if "chosen" in raw and "rejected" in raw:
            return PromptRecord(parse_comparison(raw, source, tokenizer).prompt, source)
        if "messages" in raw:
            return PromptRecord(parse_demonstration(raw, source, tokenizer).prompt, source)
    prompt, _ = _prompt_text(_require(raw, prompt_field, source), prompt_field, source, tokenizer, as_user_turn)
    return PromptRecord(prompt, source)


def rankings_to_comparisons(rankings: Iterable[Ranking]) -> list[Comparison]:
    """Expand each ranking of K responses into its K*(K-1)/2 pairs, chosen = the better ranked.

    InstructGPT (Ouyang et al. 2022, sec. 3.5) trains on all pairs of a ranking; keeping
    them adjacent in the returned list lets a caller batch them together as it did.
    """
    pairs = []
    for r in rankings:
        for i, better in enumerate(r.ranking):
            for worse in r.ranking[i + 1:]:
                pairs.append(Comparison(r.prompt, r.responses[better], r.responses[worse], None, r.labeler, r.source))
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
                        as_user_turn: bool = False) -> RecordList:
    """Load SFT demonstrations. ``prompt_field``/``completion_field`` map other layouts, e.g. GSM8K:
    ``load_demonstrations(path, prompt_field="question", completion_field="answer", as_user_turn=True)``."""
    return _load(path, lambda raw, src: [parse_demonstration(raw, src, tokenizer, prompt_field, completion_field,
                                                             as_user_turn)], skip_bad_records)


def load_comparisons(path: str | Path, tokenizer=None, skip_bad_records: bool = False,
                     as_user_turn: bool = False) -> RecordList:
    """Load pairwise comparisons; ranking records (detected per record by "responses"/"ranking")
    are expanded to all their pairs with :func:`rankings_to_comparisons`."""

    def parse(raw: dict, source: Source) -> list[Comparison]:
        if "responses" in raw or "ranking" in raw:
            return rankings_to_comparisons([parse_ranking(raw, source, tokenizer, as_user_turn)])
        return [parse_comparison(raw, source, tokenizer, as_user_turn)]

    return _load(path, parse, skip_bad_records)


def load_rankings(path: str | Path, tokenizer=None, skip_bad_records: bool = False,
                  as_user_turn: bool = False) -> RecordList:
    """Load rankings of K responses (best first), unexpanded."""
    return _load(path, lambda raw, src: [parse_ranking(raw, src, tokenizer, as_user_turn)], skip_bad_records)


def load_prompts(path: str | Path, tokenizer=None, skip_bad_records: bool = False, prompt_field: str = "prompt",
                 as_user_turn: bool = False) -> RecordList:
    """Load prompts for PPO; comparison and ``{"messages"}`` files give their prompts too."""
    return _load(path, lambda raw, src: [parse_prompt(raw, src, tokenizer, prompt_field, as_user_turn)],
                 skip_bad_records)


GSM8K_SOLVERS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


def load_gsm8k_solution_comparisons(path: str | Path, tokenizer=None, include_ground_truth: bool = True,
                                    skip_bad_records: bool = False, as_user_turn: bool = True) -> RecordList:
    """Correct-vs-incorrect pairs from GSM8K's ``example_model_solutions.jsonl(.gz)``.

    Each record holds a question, a reference solution (``ground_truth``) and four model
    solutions labelled ``is_correct`` by checking the final answer. Every distinct correct
    solution (with the reference when ``include_ground_truth``) is paired with every distinct
    incorrect one; a question with none of either gives no pairs. The labeler is
    ``"gsm8k/is_correct"``: an automatic check, not a human judgement (see the file's SOURCE.md).
    """

    def parse(raw: dict, source: Source) -> list[Comparison]:
        prompt, rendered = _prompt_text(_require(raw, "question", source), "question", source, tokenizer,
                                        as_user_turn)
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
        if rendered:
            correct = [response_text(c, tokenizer) for c in correct]
            incorrect = [response_text(c, tokenizer) for c in incorrect]
        return [Comparison(prompt, good, bad, None, "gsm8k/is_correct", source)
                for good in correct for bad in incorrect if good != bad]

    return _load(path, parse, skip_bad_records)
