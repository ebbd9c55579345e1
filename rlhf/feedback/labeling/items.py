"""Reading what a labeling project is made of: the candidates file (``rlhf label generate``'s
output) and the gold items, each bad record named by file, line and field before anything is
written to the database."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rlhf.data.errors import DataError
from rlhf.data.records import Source, read_records

MAX_RESPONSES = 9  # InstructGPT ranked K = 4..9
MAX_TEXT_CHARS = 20_000


@dataclass(frozen=True)
class Item:
    """One prompt and its K responses; a gold item also carries its known best ordering."""

    prompt: str
    responses: list[str]
    ended: list[bool]
    line: int
    gold_ranking: list[int] | None = None


def _text(raw: dict, field: str, source: Source) -> str:
    value = raw.get(field)
    if field not in raw:
        raise DataError(source.path, source.line, field, f"missing field (fields present: {', '.join(sorted(raw)) or 'none'})")
    if not isinstance(value, str) or not value.strip():
        raise DataError(source.path, source.line, field, "expected a non-empty string")
    if len(value) > MAX_TEXT_CHARS:
        raise DataError(source.path, source.line, field, f"longer than {MAX_TEXT_CHARS} characters")
    return value


def parse_item(raw: dict, source: Source, gold: bool = False) -> Item:
    """``{"prompt", "responses": [...], "ended"?: [...]}``, and for gold ``"ranking"`` (best first)."""
    prompt = _text(raw, "prompt", source)
    responses = raw.get("responses")
    if not isinstance(responses, list) or not 2 <= len(responses) <= MAX_RESPONSES:
        raise DataError(source.path, source.line, "responses", f"expected a list of 2 to {MAX_RESPONSES} strings")
    texts = [_text({"responses[%d]" % i: r}, "responses[%d]" % i, source) for i, r in enumerate(responses)]
    if len(set(t.strip() for t in texts)) != len(texts):
        raise DataError(source.path, source.line, "responses", "two responses are identical; a labeler cannot rank them")
    ended = raw.get("ended", [True] * len(texts))
    if not isinstance(ended, list) or len(ended) != len(texts) or not all(isinstance(e, bool) for e in ended):
        raise DataError(source.path, source.line, "ended", f"expected a list of {len(texts)} true/false values")
    ranking = None
    if gold:
        ranking = raw.get("ranking")
        if (not isinstance(ranking, list) or any(isinstance(r, bool) or not isinstance(r, int) for r in ranking)
                or sorted(ranking) != list(range(len(texts)))):
            raise DataError(source.path, source.line, "ranking",
                            f"expected a permutation of 0..{len(texts) - 1} (best first), got {ranking!r}")
    return Item(prompt, texts, list(ended), source.line or 0, ranking)


def load_items(path: str | Path, gold: bool = False) -> list[Item]:
    """Every item of a candidates (or gold) file; the first bad record raises a DataError."""
    return [parse_item(raw, source, gold) for raw, source in read_records(path)]
