"""The spread of a speed ratio: a bootstrap confidence interval over interleaved repeats.

A speed ratio is TRL's median seconds per update / ours. One run's median hides two sources of
noise: update-to-update variation inside a run, and run-to-run variation (the load of a shared
machine, where the process landed). The bootstrap resamples both, hierarchically (Davison &
Hinkley 1997, section 3.8; "two-stage" bootstrap): repeats with replacement, then updates with
replacement inside each chosen repeat. Repeat r of ours and repeat r of TRL ran back to back
(run.py interleaves them), so they share the machine's state at that time: a repeat index is
drawn once for both libraries (a paired draw), which keeps a slow period from counting against
one library only. A target counts as met only when the interval's lower end clears it.

Standard library only: the report runs under any Python.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence

Repeats = Sequence[Sequence[float]]  # per repeat, the timed updates' seconds


def median_ratio(ours: Repeats, trl: Repeats) -> float:
    """TRL's median seconds per update over all timed updates / ours (above 1: ours is faster)."""
    return statistics.median(_pool(trl)) / statistics.median(_pool(ours))


def bootstrap_ratio_ci(ours: Repeats, trl: Repeats, confidence: float = 0.95, n_boot: int = 2000,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile interval of ``median_ratio`` under the paired two-stage bootstrap.

    1. Draw len(repeats) repeat indices with replacement (the same indices for both libraries
       when they have the same number of repeats; independently otherwise).
    2. Inside each drawn repeat, draw its updates with replacement, per library.
    3. Pool the drawn updates per library and take the ratio of medians.
    The interval is the (1 - confidence) / 2 and (1 + confidence) / 2 quantiles of n_boot such
    ratios (nearest rank)."""
    ours, trl = [list(r) for r in ours if r], [list(r) for r in trl if r]
    if not ours or not trl:
        raise ValueError("both libraries need at least one repeat with timed updates")
    rng = random.Random(seed)
    paired = len(ours) == len(trl)
    ratios = []
    for _ in range(n_boot):
        picks_o = [rng.randrange(len(ours)) for _ in ours]
        picks_t = picks_o if paired else [rng.randrange(len(trl)) for _ in trl]
        o = [x for i in picks_o for x in rng.choices(ours[i], k=len(ours[i]))]
        t = [x for i in picks_t for x in rng.choices(trl[i], k=len(trl[i]))]
        ratios.append(statistics.median(t) / statistics.median(o))
    ratios.sort()
    alpha = (1 - confidence) / 2
    return _rank(ratios, alpha), _rank(ratios, 1 - alpha)


def target_met(ci: tuple[float, float] | None, target: float) -> bool:
    """Met only when the whole interval clears the target (its lower end is at or above it)."""
    return ci is not None and ci[0] >= target


def break_even_updates(first_extra_s: float, eager_s: float, compiled_s: float) -> int | None:
    """After how many updates a one-off cost (compilation, paid in the first updates) is repaid
    by a per-update saving: ceil(extra / (eager - compiled)); None when there is no saving."""
    saving = eager_s - compiled_s
    if saving <= 0:
        return None
    return max(0, math.ceil(first_extra_s / saving))


def _pool(repeats: Repeats) -> list[float]:
    pooled = [x for r in repeats for x in r]
    if not pooled:
        raise ValueError("no timed updates")
    return pooled


def _rank(sorted_values: list[float], q: float) -> float:
    """Nearest-rank quantile: the value at rank ceil(q * n) (1-based), clamped to [1, n]."""
    n = len(sorted_values)
    return sorted_values[min(n, max(1, math.ceil(q * n))) - 1]
