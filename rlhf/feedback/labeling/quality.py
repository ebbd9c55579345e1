"""Labeler quality, as pure functions of the stored labels: pairwise preferences, Cohen's kappa
between every two labelers over the comparisons they share, Krippendorff's alpha for the whole
project, gold accuracy, and the weight and flags of each labeler.

The unit of agreement is one *comparison*: an item and two of its responses (i < j, candidate
indices). A ranking of K responses with ties (tiers, best first) gives K(K-1)/2 comparisons, each
labelled "i" (response i preferred), "j", or "tie". Treating rankings as their pairwise
preferences is what the reward model trains on (InstructGPT sec. 3.5), so agreement is measured on
what the labels are used for. "All bad" and skips give no comparisons.

Krippendorff's alpha is the **nominal** one over these three categories: it handles any number
of labelers per comparison and missing labels, and a tie is not treated as halfway between the
two preferences (an ordinal alpha would; with three categories the two agree closely anyway).

The weight rule (InstructGPT and the seed: agreement is watched, new labelers count less):

    weight = agreement * gold * experience
    agreement  = clip(kappa with the others, 0, 1)          1 when it shares no comparisons yet
                 (each partner counted by its own agreement: consensus_kappas)
    gold       = clip((gold accuracy - 0.5) / 0.5, 0, 1)     1 when it answered no gold item yet
    experience = min(1, labels given / ramp)                 ramp = 20 labels by default

so a coin-flipping labeler (kappa ~ 0, gold accuracy ~ 0.5) weighs ~0, and a careful one with 10
labels weighs half of what it will after 20. That is the labeler's weight *now*; each exported
comparison record carries the weight of its own label (:func:`label_weight`): the labeler's k-th
confirmed label (k = 1, 2, ... in the order stored, gold and "all bad" included, skips not)
counts agreement * gold * min(1, k / ramp): with ramp 20 its 5th label counts 5/20 of what its
20th and every later one count, however many it gives afterwards (the seed: a new labeler's
*early comparisons* count less). A labeler is flagged when its kappa is below
``kappa_threshold`` (0.5, the seed's line for unclear guidelines) or its gold accuracy below
``gold_threshold`` (0.7), each only once it has ``min_shared`` comparisons to judge by.
"""

from __future__ import annotations

import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from itertools import combinations
from typing import Mapping, Sequence

from rlhf.feedback.agreement import cohens_kappa

TIE = "tie"

# A comparison's key: (item id, i, j) with i < j candidate indices.
Key = tuple[int, int, int]


def pairwise_preferences(tiers: Sequence[Sequence[int]]) -> dict[tuple[int, int], str]:
    """{(i, j): "i" | "j" | "tie"} for every pair i < j of the ranked responses. ``tiers`` is a
    ranking with ties, best first: [[2], [0, 1]] says 2 beats 0 and 1, which tie."""
    tier_of = {index: rank for rank, tier in enumerate(tiers) for index in tier}
    prefs = {}
    for i, j in combinations(sorted(tier_of), 2):
        prefs[(i, j)] = TIE if tier_of[i] == tier_of[j] else ("i" if tier_of[i] < tier_of[j] else "j")
    return prefs


def flipped(key: Key) -> bool:
    """A fixed pseudo-random bit of a comparison (the same for every labeler).

    Cohen's kappa charges agreement that the raters' label rates make likely by chance. When the
    candidates of an item come in a quality order (a generator's temperature slots, a file sorted
    by source), "i is better" is far more common than "j is better" for everyone, chance agreement
    looks high and kappa is deflated for reasons that have nothing to do with the labelers.
    Orienting each comparison by this bit makes the two rates even."""
    return zlib.crc32(f"{key[0]}:{key[1]}:{key[2]}".encode()) & 1 == 1


def comparisons_by_labeler(labels: Sequence[tuple[str, int, Sequence[Sequence[int]]]]) -> dict[str, dict[Key, str]]:
    """{labeler: {(item, i, j): category}} from (labeler, item id, tiers) triples, each comparison
    oriented by :func:`flipped` ("i" and "j" swapped where it is set)."""
    swap = {"i": "j", "j": "i", TIE: TIE}
    out: dict[str, dict[Key, str]] = defaultdict(dict)
    for labeler, item, tiers in labels:
        for (i, j), category in pairwise_preferences(tiers).items():
            key = (item, i, j)
            out[labeler][key] = swap[category] if flipped(key) else category
    return dict(out)


def kappa_matrix(by_labeler: Mapping[str, Mapping[Key, str]], min_shared: int = 1) -> dict[tuple[str, str], tuple[float | None, int]]:
    """{(a, b): (Cohen's kappa over the comparisons a and b both labelled, how many)} for every
    pair a < b of labelers; kappa is None when they share fewer than ``min_shared``."""
    names = sorted(by_labeler)
    matrix = {}
    for a, b in combinations(names, 2):
        shared = sorted(set(by_labeler[a]) & set(by_labeler[b]))
        kappa = None
        if len(shared) >= max(1, min_shared):
            kappa = cohens_kappa([by_labeler[a][k] for k in shared], [by_labeler[b][k] for k in shared])
        matrix[(a, b)] = (kappa, len(shared))
    return matrix


def kappa_with_others(matrix: Mapping[tuple[str, str], tuple[float | None, int]], name: str,
                      trust: Mapping[str, float] | None = None) -> tuple[float | None, int]:
    """A labeler's kappa with the others: the mean of its pairwise kappas weighted by the number
    of shared comparisons (times each partner's ``trust``, default 1), and how many comparisons
    it shares (None, 0 when it shares none)."""
    total, weight, shared = 0.0, 0.0, 0
    for (a, b), (kappa, n) in matrix.items():
        if name in (a, b) and kappa is not None:
            w = n * (1.0 if trust is None else trust.get(b if a == name else a, 1.0))
            total += kappa * w
            weight += w
            shared += n
    if not shared:
        return None, 0
    return (total / weight if weight > 0 else 0.0), shared


def consensus_kappas(matrix: Mapping[tuple[str, str], tuple[float | None, int]], names: Sequence[str],
                     rounds: int = 20) -> dict[str, tuple[float | None, int]]:
    """Each labeler's kappa with the others, counting each partner by how much *it* agrees with
    the rest: trust_0 = 1, kappa_r = kappa_with_others(trust_{r-1}), trust_r = clip(kappa_r, 0, 1).

    A plain mean lets careless labelers drag everyone down (two coin-flippers among five halve a
    careful labeler's mean kappa); after a few rounds a coin-flipper's trust is ~0, so careful
    labelers are judged by one another while a careless one still shows its ~0 kappa."""
    trust = {name: 1.0 for name in names}
    result = {name: kappa_with_others(matrix, name) for name in names}
    for _ in range(rounds):
        result = {name: kappa_with_others(matrix, name, trust) for name in names}
        trust = {name: 1.0 if k is None else min(1.0, max(0.0, k)) for name, (k, _) in result.items()}
    return result


def krippendorff_alpha_nominal(units: Mapping[Key, Sequence[str]]) -> float | None:
    """Krippendorff's alpha for nominal data: alpha = 1 - D_o / D_e (Krippendorff 2011,
    "Computing Krippendorff's alpha-reliability", sec. C). ``units`` maps each unit to the values
    its labelers gave; units with fewer than two values are not pairable and are dropped.

    Coincidences: each unit u with m_u values adds 1/(m_u - 1) for every ordered pair of its
    values (c, k) from different labelers. n_c = sum_k o_ck, n = sum_c n_c.
    D_o = sum_{c != k} o_ck / n;  D_e = sum_{c != k} n_c n_k / (n (n - 1)).
    None when nothing is pairable or every value is the same (D_e = 0)."""
    coincidence: Counter = Counter()
    for values in units.values():
        m = len(values)
        if m < 2:
            continue
        for x in range(m):
            for y in range(m):
                if x != y:
                    coincidence[(values[x], values[y])] += 1.0 / (m - 1)
    n_c: Counter = Counter()
    for (c, _), count in coincidence.items():
        n_c[c] += count
    n = sum(n_c.values())
    if n <= 1:
        return None
    d_o = sum(count for (c, k), count in coincidence.items() if c != k) / n
    d_e = sum(n_c[c] * n_c[k] for c in n_c for k in n_c if c != k) / (n * (n - 1))
    if d_e == 0:
        return None
    return 1.0 - d_o / d_e


def alpha_units(by_labeler: Mapping[str, Mapping[Key, str]]) -> dict[Key, list[str]]:
    """Each comparison's values from every labeler that labelled it."""
    units: dict[Key, list[str]] = defaultdict(list)
    for name in sorted(by_labeler):
        for key, category in by_labeler[name].items():
            units[key].append(category)
    return dict(units)


def gold_accuracy(labelled: Sequence[tuple[Sequence[Sequence[int]], Sequence[int]]]) -> tuple[float | None, int]:
    """(accuracy, comparisons) of a labeler's answers on gold items. Each entry is (the labeler's
    tiers, the gold ranking best first); every pair the gold ranking orders counts 1 when the
    labeler orders it the same way, 0.5 for a tie, 0 when reversed."""
    score, count = 0.0, 0
    for tiers, gold in labelled:
        mine = pairwise_preferences(tiers)
        truth = pairwise_preferences([[index] for index in gold])
        for pair, answer in truth.items():
            given = mine.get(pair)
            if given is None:
                continue
            score += 1.0 if given == answer else (0.5 if given == TIE else 0.0)
            count += 1
    return (score / count if count else None), count


@dataclass(frozen=True)
class WeightRule:
    """The constants of the weight and flag rule (module docstring)."""

    ramp: int = 20
    kappa_threshold: float = 0.5
    gold_threshold: float = 0.7
    min_shared: int = 10


def experience(k: int, ramp: int) -> float:
    """min(1, k / ramp): how much a labeler's k-th label (or a labeler with k labels) counts for
    experience; ramp 0 turns the ramp off."""
    return min(1.0, k / ramp) if ramp > 0 else 1.0


def labeler_weight(kappa: float | None, gold: float | None, n_labels: int, rule: WeightRule = WeightRule()
                   ) -> dict[str, float]:
    """The three factors and their product (module docstring), for the admin page to show."""
    agreement = 1.0 if kappa is None else min(1.0, max(0.0, kappa))
    gold_factor = 1.0 if gold is None else min(1.0, max(0.0, (gold - 0.5) / 0.5))
    exp = experience(n_labels, rule.ramp)
    return {"agreement": agreement, "gold": gold_factor, "experience": exp, "weight": agreement * gold_factor * exp}


def label_weight(agreement: float, gold: float, k: int, ramp: int) -> float:
    """The weight of a labeler's k-th confirmed label (k = 1, 2, ...): agreement * gold *
    min(1, k / ramp). Agreement and gold are the labeler's current factors (its later labels
    tell how careful it was all along); only experience is taken at the time of the label."""
    return agreement * gold * experience(k, ramp)


def labeler_flags(kappa: float | None, n_shared: int, gold: float | None, n_gold: int,
                  rule: WeightRule = WeightRule()) -> list[str]:
    """Why a labeler needs a look: low agreement with the others, or low gold accuracy."""
    flags = []
    if kappa is not None and n_shared >= rule.min_shared and kappa < rule.kappa_threshold:
        flags.append(f"kappa {kappa:.2f} < {rule.kappa_threshold:g}")
    if gold is not None and n_gold >= rule.min_shared and gold < rule.gold_threshold:
        flags.append(f"gold accuracy {gold:.2f} < {rule.gold_threshold:g}")
    return flags
