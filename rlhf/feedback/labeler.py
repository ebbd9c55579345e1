"""The seam through which preferences enter: anything that ranks responses is a ``Labeler``.

A labeler ranks K responses to one prompt, best first; comparing two is ranking two. The
simulated people and the gold rubric of the embedded task (``rlhf.embedded.labelers``) are the
first implementations; a human labeling app or an AI judge plugs in through the same two
methods, so every consumer (the demo, ``rlhf pipeline``, iterative rounds) can swap the source
of its labels in one argument.
"""

from __future__ import annotations

import random
from typing import Protocol, Sequence, runtime_checkable


@runtime_checkable
class Labeler(Protocol):
    """Ranks responses to a prompt; ``name`` is recorded with every label it gives."""

    name: str

    def rank(self, prompt: str, responses: Sequence[str], ended: Sequence[bool], rng: random.Random) -> list[int]:
        """Indices of ``responses``, best first. ``ended[i]`` says whether response i ended with
        end-of-text (a cut-off response is worse). ``rng`` is the labeler's source of noise."""
        ...


def compare(labeler: Labeler, prompt: str, a: str, b: str, rng: random.Random,
            ended: tuple[bool, bool] = (True, True)) -> bool:
    """One pairwise judgment: True if ``labeler`` prefers ``a`` to ``b``."""
    return labeler.rank(prompt, [a, b], list(ended), rng)[0] == 0


def ranking_record(labeler: Labeler, prompt: str, responses: Sequence[str], rng: random.Random,
                   ended: Sequence[bool] | None = None) -> dict:
    """A rankings-file record ``{"prompt", "responses", "ranking", "labeler"}`` (ranking best
    first); ``ended`` defaults to all True (complete responses)."""
    ended = [True] * len(responses) if ended is None else list(ended)
    if len(ended) != len(responses):
        raise ValueError(f"got {len(responses)} responses but {len(ended)} ended flags")
    return {"prompt": prompt, "responses": list(responses),
            "ranking": labeler.rank(prompt, list(responses), ended, rng), "labeler": labeler.name}
