"""bench/stats.py: the ratio of medians, its paired two-stage bootstrap interval, the target rule
and the compile break-even, on hand-made per-update times."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
import stats as S  # noqa: E402


def test_median_ratio_pools_the_timed_updates_of_all_repeats():
    # ours pooled [1, 2, 3, 5] -> median (2 + 3) / 2 = 2.5; TRL pooled [4, 5, 6] -> median 5; 5 / 2.5 = 2
    assert S.median_ratio([[1, 2], [3, 5]], [[4, 6], [5]]) == 2.0


def test_constant_times_give_a_zero_width_interval():
    # every resample of ours is all 2s and of TRL all 3s: every bootstrap ratio is 3 / 2 = 1.5
    assert S.bootstrap_ratio_ci([[2, 2], [2, 2]], [[3, 3], [3, 3]]) == (1.5, 1.5)


def test_repeats_are_drawn_paired_so_a_slow_period_slows_both_libraries():
    # Repeat 0 ran on a quiet machine (ours 1 s, TRL 2 s), repeat 1 on a loaded one (3 s, 6 s):
    # in both TRL took twice as long. Paired draws: (0,0) -> 2/1, (1,1) -> 6/3, (0,1) -> pooled
    # ours [1,1,3,3] median 2, TRL [2,2,6,6] median 4 -> 2. Every ratio is 2.
    ours, trl = [[1, 1], [3, 3]], [[2, 2], [6, 6]]
    assert S.bootstrap_ratio_ci(ours, trl) == (2.0, 2.0)
    # Unpaired (three TRL repeats, so drawn independently) the load leaks into the ratio:
    # e.g. ours all from repeat 1 (median 3) against TRL all from repeat 0 (median 2) -> 2/3.
    low, high = S.bootstrap_ratio_ci(ours, [*trl, [2, 2]])
    assert low < 1.0 < 2.0 < high


def test_updates_are_resampled_inside_a_repeat():
    # One repeat each: ours [1, 1, 2] resamples to medians 1 (two or three 1s drawn, p = 20/27) or
    # 2 (p = 7/27); TRL is always 4. Ratios: 4/1 = 4 with p 0.74, 4/2 = 2 with p 0.26.
    # 2.5 % quantile -> 2, 97.5 % -> 4; the point estimate (median 1) is 4.
    assert S.median_ratio([[1, 1, 2]], [[4, 4, 4]]) == 4.0
    assert S.bootstrap_ratio_ci([[1, 1, 2]], [[4, 4, 4]]) == (2.0, 4.0)
    # a 50 % interval's lower end (25th percentile, below p 0.26) is still 2; a 40 % one's (30th) is 4
    assert S.bootstrap_ratio_ci([[1, 1, 2]], [[4, 4, 4]], confidence=0.5)[0] == 2.0
    assert S.bootstrap_ratio_ci([[1, 1, 2]], [[4, 4, 4]], confidence=0.4)[0] == 4.0


def test_the_interval_is_reproducible_and_contains_the_point_estimate():
    ours = [[5.9, 5.7, 6.1, 5.8], [6.4, 6.2, 6.6, 6.3]]
    trl = [[5.6, 5.5, 5.8, 5.4], [5.9, 6.0, 5.7, 5.8]]
    ci = S.bootstrap_ratio_ci(ours, trl)
    assert ci == S.bootstrap_ratio_ci(ours, trl)  # seeded
    assert ci[0] <= S.median_ratio(ours, trl) <= ci[1]
    assert ci[1] < 1.0  # TRL faster in every update of both repeats: ours is slower, with confidence


def test_a_target_is_met_only_by_the_lower_end():
    assert S.target_met((1.45, 1.9), 1.4)
    assert S.target_met((1.4, 1.5), 1.4)
    assert not S.target_met((1.2, 1.9), 1.4)  # the median may be above 1.4; the interval is not
    assert not S.target_met(None, 1.4)


def test_break_even_of_a_one_off_compile_cost():
    # 30 s of compilation repaid at 5 - 4 = 1 s per update: after 30 updates; 31 s: ceil(31) = 31
    assert S.break_even_updates(30.0, 5.0, 4.0) == 30
    assert S.break_even_updates(31.0, 5.0, 4.0) == 31
    assert S.break_even_updates(30.0, 4.0, 4.5) is None  # compiled is slower: never pays


def test_no_timed_updates_is_an_error():
    with pytest.raises(ValueError, match="both libraries need at least one repeat"):
        S.bootstrap_ratio_ci([[]], [[1.0]])
