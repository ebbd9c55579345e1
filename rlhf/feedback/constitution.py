"""A constitution: the written principles an AI judge compares and critiques by.

As in Constitutional AI (Bai et al. 2022, arXiv:2212.08073), each principle carries a critique
request and a revision request (the supervised stage: a model critiques its own answer under a
principle, then revises it) and a comparison question (the RL stage: a judge picks the better of
two answers). One principle is drawn at random per comparison or critique, from a seeded stream,
so the same run draws the same principles. The default constitution (helpful, honest, harmless)
ships with the package: ``rlhf/feedback/constitution_default.yaml``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import yaml

from rlhf.errors import UserError

DEFAULT_CONSTITUTION = Path(__file__).resolve().parent / "constitution_default.yaml"
FIELDS = ("critique_request", "revision_request", "comparison_question")


class ConstitutionError(UserError, ValueError):
    """A constitution file that cannot be used; the message names the file, line and field."""


@dataclass(frozen=True)
class Principle:
    """One principle: how to critique an answer, how to revise it, how to compare two."""

    name: str
    critique_request: str
    revision_request: str
    comparison_question: str


@dataclass(frozen=True)
class Constitution:
    """A named list of principles; ``draw`` picks one per comparison or critique."""

    name: str
    principles: tuple[Principle, ...]

    def draw(self, rng: random.Random) -> Principle:
        """A principle drawn uniformly with ``rng`` (the caller seeds it)."""
        return self.principles[rng.randrange(len(self.principles))]


def load_constitution(path: str | Path | None = None) -> Constitution:
    """The constitution in the YAML file ``path`` (default: the package's HHH constitution).

    The file holds ``name`` and ``principles``, a list of mappings with ``name`` and the three
    texts in ``FIELDS``; any mistake is a ``ConstitutionError`` naming file, line and field."""
    path = Path(path) if path else DEFAULT_CONSTITUTION
    if not path.is_file():
        raise ConstitutionError(f"constitution file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark else ""
        raise ConstitutionError(f"{path}{line}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(root, yaml.MappingNode):
        raise ConstitutionError(f"{path}, line 1: expected a mapping with 'name' and 'principles'")
    top = _mapping(root)
    principles_node = top.get("principles")
    if not isinstance(principles_node, yaml.SequenceNode) or not principles_node.value:
        line = (principles_node or root).start_mark.line + 1
        raise ConstitutionError(f"{path}, line {line}, field 'principles': expected a non-empty list of principles")
    principles, seen = [], set()
    for i, node in enumerate(principles_node.value):
        where = f"{path}, line {node.start_mark.line + 1}, field 'principles[{i}]"
        if not isinstance(node, yaml.MappingNode):
            raise ConstitutionError(f"{where}': expected a mapping with name, {', '.join(FIELDS)}")
        fields = _mapping(node)
        values = {}
        for key in ("name",) + FIELDS:
            value = fields.get(key)
            if not isinstance(value, yaml.ScalarNode) or not str(value.value).strip():
                raise ConstitutionError(f"{where}.{key}': missing or empty (a principle needs name, {', '.join(FIELDS)})")
            values[key] = " ".join(str(value.value).split())
        unknown = sorted(set(fields) - {"name", *FIELDS})
        if unknown:
            raise ConstitutionError(f"{where}.{unknown[0]}': unknown field; a principle has name, {', '.join(FIELDS)}")
        if values["name"] in seen:
            raise ConstitutionError(f"{where}.name': principle {values['name']!r} appears twice")
        seen.add(values["name"])
        principles.append(Principle(**values))
    name_node = top.get("name")
    name = str(name_node.value) if isinstance(name_node, yaml.ScalarNode) else path.stem
    return Constitution(name, tuple(principles))


def _mapping(node: yaml.MappingNode) -> dict[str, yaml.Node]:
    return {str(key.value): value for key, value in node.value}
