"""Does a reward order a policy's own samples as gold does?

Held-out comparisons measure a reward model on the responses it was trained on; PPO only ever
shows it the policy's samples, which drift away from them. The signal PPO gets is whether, for two
responses to the same prompt, the reward prefers the one gold prefers. 0.5 is a coin flip.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Agreement:
    """``agree`` of ``pairs`` pairs ordered by the reward as by gold."""

    agree: int
    pairs: int

    @property
    def rate(self) -> float:
        """The share of pairs ordered as gold does (NaN when there are no pairs)."""
        return self.agree / self.pairs if self.pairs else float("nan")


def agreement_with_gold(prompts: Sequence[str], scores: Sequence[float], gold: Sequence[float],
                        groups: Sequence[str] | None = None, min_gold_gap: float = 0.0) -> dict[str, Agreement]:
    """Over every pair of responses to the same prompt whose gold differs (by at least
    ``min_gold_gap``), how many the reward orders as gold does: sign(s_a - s_b) = sign(g_a - g_b).
    A tie in the reward counts as disagreeing (it gives PPO no direction).

    One entry per response: its prompt, the reward's score, the gold score and optionally a group
    (e.g. the kind of instruction; a pair's group is its prompt's). Returns ``{"all": ...}`` and,
    with ``groups``, one ``Agreement`` per group, in sorted order."""
    n = len(prompts)
    if not len(scores) == len(gold) == n or (groups is not None and len(groups) != n):
        raise ValueError(f"need one score, gold and group per response; got {n} prompts, {len(scores)} scores, "
                         f"{len(gold)} gold" + ("" if groups is None else f", {len(groups)} groups"))
    if groups is not None and "all" in groups:
        raise ValueError('"all" names the overall agreement; rename that group')
    if min_gold_gap < 0:
        raise ValueError(f"min_gold_gap must be >= 0, got {min_gold_gap}")
    by_prompt: dict[str, list[int]] = defaultdict(list)
    for i, prompt in enumerate(prompts):
        by_prompt[prompt].append(i)
    agree: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    for rows in by_prompt.values():
        for a, b in itertools.combinations(rows, 2):
            gold_gap = gold[a] - gold[b]
            if gold_gap == 0 or abs(gold_gap) < min_gold_gap:
                continue
            same_order = (scores[a] - scores[b]) * gold_gap > 0
            for key in ("all",) if groups is None else ("all", groups[a]):
                total[key] += 1
                agree[key] += same_order
    keys = ["all"] + sorted(k for k in total if k != "all")
    return {k: Agreement(agree[k], total[k]) for k in keys}
