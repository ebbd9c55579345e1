"""Labeler quality math on tiny hand-written inputs, the arithmetic in comments."""

import pytest

from rlhf.feedback.labeling.quality import (TIE, WeightRule, alpha_units, comparisons_by_labeler, gold_accuracy,
                                            consensus_kappas, flipped, kappa_matrix, kappa_with_others, krippendorff_alpha_nominal,
                                            label_weight, labeler_flags, labeler_weight, pairwise_preferences)


def test_pairwise_preferences_of_a_ranking_with_a_tie():
    # [[2], [0, 1]]: 2 beats 0 and 1, which tie. Pairs (i < j): (0,1) tie, (0,2) j wins, (1,2) j wins.
    assert pairwise_preferences([[2], [0, 1]]) == {(0, 1): TIE, (0, 2): "j", (1, 2): "j"}
    assert pairwise_preferences([[1], [0]]) == {(0, 1): "j"}
    assert pairwise_preferences([[0], [1], [2]]) == {(0, 1): "i", (0, 2): "i", (1, 2): "i"}


def test_kappa_matrix_over_shared_comparisons_only():
    # a and b share 4 comparisons; c shares none with them.
    # a: i,i,i,tie  b: i,i,j,tie. p_o = 3/4. freq a: i3 tie1, b: i2 j1 tie1.
    # p_e = (3*2 + 1*1) / 16 = 7/16. kappa = (12/16 - 7/16) / (9/16) = 5/9.
    by = {"a": {(1, 0, 1): "i", (1, 0, 2): "i", (1, 1, 2): "i", (2, 0, 1): TIE},
          "b": {(1, 0, 1): "i", (1, 0, 2): "i", (1, 1, 2): "j", (2, 0, 1): TIE},
          "c": {(3, 0, 1): "j"}}
    matrix = kappa_matrix(by)
    kappa, shared = matrix[("a", "b")]
    assert shared == 4 and kappa == pytest.approx(5 / 9)
    assert matrix[("a", "c")] == (None, 0) and matrix[("b", "c")] == (None, 0)
    assert kappa_matrix(by, min_shared=5)[("a", "b")] == (None, 4)


def test_comparisons_are_oriented_by_a_fixed_bit_of_their_key():
    # [[0], [1], [2]] says "i" for every pair; where flipped(key) holds it is stored as "j".
    by = comparisons_by_labeler([("a", 7, [[0], [1], [2]]), ("b", 7, [[0], [1, 2]])])
    for key in [(7, 0, 1), (7, 0, 2), (7, 1, 2)]:
        assert by["a"][key] == ("j" if flipped(key) else "i")
    assert by["b"][(7, 1, 2)] == TIE  # a tie stays a tie
    keys = [(item, 0, 1) for item in range(1, 201)]
    assert 80 < sum(map(flipped, keys)) < 120  # about half


def test_kappa_with_others_is_weighted_by_shared_comparisons():
    matrix = {("a", "b"): (0.5, 10), ("a", "c"): (0.8, 30), ("b", "c"): (None, 0)}
    # a: (0.5*10 + 0.8*30) / 40 = 29/40 = 0.725; b only with a: 0.5 over 10; c only with a.
    assert kappa_with_others(matrix, "a") == (pytest.approx(0.725), 40)
    assert kappa_with_others(matrix, "b") == (0.5, 10)
    assert kappa_with_others({("a", "b"): (None, 0)}, "a") == (None, 0)


def test_krippendorff_alpha_nominal_by_hand():
    # u1: i,i  u2: i,j  u3: j,j,j  u4: tie (one value: not pairable, dropped).
    # Coincidences: u1 gives o_ii += 2 (2 ordered pairs / (2-1)); u2 o_ij += 1, o_ji += 1;
    # u3 six ordered (j,j) pairs / (3-1) -> o_jj += 3. n_i = 3, n_j = 4, n = 7.
    # D_o = (1 + 1) / 7 = 2/7; D_e = (3*4 + 4*3) / (7*6) = 24/42 = 4/7; alpha = 1 - (2/7)/(4/7) = 0.5.
    units = {(1, 0, 1): ["i", "i"], (2, 0, 1): ["i", "j"], (3, 0, 1): ["j", "j", "j"], (4, 0, 1): [TIE]}
    assert krippendorff_alpha_nominal(units) == pytest.approx(0.5)


def test_krippendorff_alpha_perfect_chance_and_degenerate():
    assert krippendorff_alpha_nominal({(1, 0, 1): ["i", "i"], (2, 0, 1): ["j", "j"]}) == pytest.approx(1.0)
    # Two units in full disagreement: o_ij = o_ji = 2, n_i = n_j = 2, n = 4.
    # D_o = 4/4 = 1; D_e = (2*2 + 2*2) / (4*3) = 2/3; alpha = 1 - 1/(2/3) = -0.5.
    assert krippendorff_alpha_nominal({(1, 0, 1): ["i", "j"], (2, 0, 1): ["j", "i"]}) == pytest.approx(-0.5)
    assert krippendorff_alpha_nominal({(1, 0, 1): ["i", "i"]}) is None  # one category only: D_e = 0
    assert krippendorff_alpha_nominal({(1, 0, 1): ["i"]}) is None  # nothing pairable


def test_alpha_units_collect_every_labelers_value():
    by = {"a": {(1, 0, 1): "i"}, "b": {(1, 0, 1): "j", (2, 0, 1): "i"}}
    assert alpha_units(by) == {(1, 0, 1): ["i", "j"], (2, 0, 1): ["i"]}


def test_gold_accuracy_counts_ties_as_half():
    # Gold [0, 1, 2]; labeler [[0], [2], [1]]: (0,1) right, (0,2) right, (1,2) reversed -> 2 of 3.
    # Gold [1, 0]; labeler ties them -> 0.5. Total (2 + 0.5) / 4 = 0.625.
    accuracy, n = gold_accuracy([([[0], [2], [1]], [0, 1, 2]), ([[0, 1]], [1, 0])])
    assert n == 4 and accuracy == pytest.approx(0.625)
    assert gold_accuracy([]) == (None, 0)


def test_weight_rule_by_hand():
    # agreement 0.6; gold (0.9 - 0.5) / 0.5 = 0.8; experience 10 / 20 = 0.5 -> 0.6 * 0.8 * 0.5 = 0.24.
    w = labeler_weight(0.6, 0.9, 10, WeightRule(ramp=20))
    assert w == pytest.approx({"agreement": 0.6, "gold": 0.8, "experience": 0.5, "weight": 0.24})
    assert labeler_weight(-0.1, 0.9, 40)["weight"] == 0.0  # worse than chance agreement
    assert labeler_weight(0.9, 0.4, 40)["weight"] == 0.0  # below-chance gold accuracy
    assert labeler_weight(None, None, 40)["weight"] == 1.0  # nothing known yet: only experience counts
    assert labeler_weight(1.0, 1.0, 5, WeightRule(ramp=20))["weight"] == pytest.approx(0.25)


def test_flags_need_enough_comparisons():
    rule = WeightRule(kappa_threshold=0.5, gold_threshold=0.7, min_shared=10)
    assert labeler_flags(0.3, 10, 0.9, 12, rule) == ["kappa 0.30 < 0.5"]
    assert labeler_flags(0.3, 9, 0.6, 12, rule) == ["gold accuracy 0.60 < 0.7"]
    assert labeler_flags(0.7, 50, 0.95, 50, rule) == []
    assert labeler_flags(None, 0, None, 0, rule) == []


def test_consensus_kappa_counts_partners_by_their_own_agreement():
    # a-b agree (0.8), c agrees with no one (0.0), 10 shared comparisons each.
    # Round 1 (trust 1): a = (0.8*10 + 0*10) / 20 = 0.4, b = 0.4, c = 0. Trust a .4, b .4, c 0.
    # Round 2: a = (0.8*10*0.4 + 0*10*0) / (10*0.4 + 10*0) = 0.8, b = 0.8, c = 0; stable from here.
    matrix = {("a", "b"): (0.8, 10), ("a", "c"): (0.0, 10), ("b", "c"): (0.0, 10)}
    assert kappa_with_others(matrix, "a") == (pytest.approx(0.4), 20)
    result = consensus_kappas(matrix, ["a", "b", "c"])
    assert result["a"] == (pytest.approx(0.8), 20) and result["b"] == (pytest.approx(0.8), 20)
    assert result["c"] == (pytest.approx(0.0), 20)
    assert consensus_kappas({("a", "b"): (None, 0)}, ["a", "b"]) == {"a": (None, 0), "b": (None, 0)}


def test_the_kth_label_weighs_agreement_times_gold_times_min_1_k_over_ramp():
    # ramp 4, agreement 0.8, gold 0.5 (agreement x gold = 0.4): k = 1..5 -> 0.4 x (1/4, 2/4, 3/4, 1, 1)
    # = 0.1, 0.2, 0.3, 0.4, 0.4.
    assert [label_weight(0.8, 0.5, k, ramp=4) for k in range(1, 6)] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4])
    # ramp 20 (the default): the 5th label counts 5/20 = 0.25 of a settled one; ramp 0: no ramp.
    assert label_weight(1.0, 1.0, 5, ramp=WeightRule().ramp) == 0.25
    assert label_weight(1.0, 0.9, 1, ramp=0) == 0.9
    # The last label's weight is the labeler's weight now (n labels -> experience n / ramp).
    assert label_weight(0.8, 0.5, 3, 4) == pytest.approx(labeler_weight(0.8, 0.75, 3, WeightRule(ramp=4))["weight"])
