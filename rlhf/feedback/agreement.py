"""How much two labelers agree: raw agreement and Cohen's kappa on the same comparisons.

InstructGPT reports inter-labeler agreement of about 73% (Ouyang et al. 2022, sec. 5.1); the
simulated pool is tuned to land in that region, clearly above chance and clearly below 1.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Sequence

from rlhf.feedback.labeler import Labeler, compare

# A comparison: (prompt, response a, response b).
Comparison = tuple[str, str, str]


def cohens_kappa(labels_a: Sequence, labels_b: Sequence) -> float:
    """Cohen's kappa for two raters' categorical labels of the same items:
    kappa = (p_o - p_e) / (1 - p_e), with p_o the observed agreement and p_e the agreement
    expected by chance from each rater's label frequencies (Cohen 1960). When chance agreement
    is already perfect (both raters always give the same single label) it returns 1.0."""
    if len(labels_a) != len(labels_b):
        raise ValueError(f"got {len(labels_a)} and {len(labels_b)} labels; kappa needs the same items")
    if not labels_a:
        raise ValueError("cohens_kappa needs at least one labelled item")
    n = len(labels_a)
    p_o = sum(a == b for a, b in zip(labels_a, labels_b)) / n
    freq_a, freq_b = Counter(labels_a), Counter(labels_b)
    p_e = sum(freq_a[label] * freq_b[label] for label in freq_a) / n**2
    if p_e == 1.0:
        return 1.0
    return (p_o - p_e) / (1.0 - p_e)


def preference_labels(labeler: Labeler, comparisons: Sequence[Comparison], rng: random.Random) -> list[int]:
    """0 where the labeler prefers response a, 1 where it prefers b."""
    return [0 if compare(labeler, prompt, a, b, rng) else 1 for prompt, a, b in comparisons]


def pairwise_agreement(labeler_a: Labeler, labeler_b: Labeler,
                       comparisons: Sequence[Comparison], seed: int = 0) -> dict[str, float]:
    """Raw agreement and Cohen's kappa of two labelers judging the same comparisons."""
    labels_a = preference_labels(labeler_a, comparisons, random.Random(f"{seed}-{labeler_a.name}-a"))
    labels_b = preference_labels(labeler_b, comparisons, random.Random(f"{seed}-{labeler_b.name}-b"))
    agreement = sum(x == y for x, y in zip(labels_a, labels_b)) / len(comparisons)
    return {"agreement": agreement, "kappa": cohens_kappa(labels_a, labels_b), "n": float(len(comparisons))}


def agreement_matrix(pool: Sequence[Labeler], comparisons: Sequence[Comparison],
                     seed: int = 0) -> dict[tuple[str, str], float]:
    """Cohen's kappa for every pair of labelers in ``pool``."""
    return {(a.name, b.name): pairwise_agreement(a, b, comparisons, seed)["kappa"]
            for i, a in enumerate(pool) for b in pool[i + 1:]}
