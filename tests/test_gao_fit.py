"""Gao et al.'s over-optimisation forms and the best-of-n estimator, on hand-computed values."""

import math

import pytest
import torch

from rlhf.evaluation.gao_fit import best_of_n_expectation, fit_gao, gao_curve


def test_bon_fit_recovers_exact_coefficients():
    # alpha = 1, beta = 0.25: R(1) = 1 - 0.25 = 0.75, R(2) = 2 - 1 = 1.0, R(3) = 3 - 2.25 = 0.75
    fit = fit_gao("bon", [0.0, 1.0, 2.0, 3.0], [0.0, 0.75, 1.0, 0.75])
    assert fit.alpha == pytest.approx(1.0, abs=1e-9) and fit.beta == pytest.approx(0.25, abs=1e-9)
    assert fit.r2 == pytest.approx(1.0) and fit.residual_std == pytest.approx(0.0, abs=1e-9)
    assert fit.peak_d() == pytest.approx(2.0)  # alpha / (2 beta) = 1 / 0.5


def test_rl_fit_recovers_exact_coefficients():
    # alpha = 1, beta = 0.5: R(1) = 1 (log 1 = 0), R(e) = e (1 - 0.5) = e / 2, R(e^2) = e^2 (1 - 1) = 0
    e = math.e
    fit = fit_gao("rl", [1.0, e, e * e], [1.0, e / 2, 0.0])
    assert fit.alpha == pytest.approx(1.0, abs=1e-9) and fit.beta == pytest.approx(0.5, abs=1e-9)
    assert fit.peak_d() == pytest.approx(e)  # exp(alpha / beta - 1) = exp(1)
    assert gao_curve("rl", 0.0, 1.0, 0.5) == 0.0  # d log d -> 0 at d = 0


def test_fit_quality_by_hand():
    # Noise +-0.1 around y = d at d = 1 and d = 2: the fit goes through the means (alpha 1, beta 0),
    # SS_res = 4 x 0.01 = 0.04; mean y = 1.5, SS_tot = 0.36 + 0.16 + 0.16 + 0.36 = 1.04;
    # R^2 = 1 - 0.04 / 1.04 = 0.961538; residual std = sqrt(0.04 / (4 - 2)) = 0.141421
    fit = fit_gao("bon", [1, 1, 2, 2], [0.9, 1.1, 1.9, 2.1])
    assert fit.alpha == pytest.approx(1.0) and fit.beta == pytest.approx(0.0, abs=1e-9)
    assert fit.r2 == pytest.approx(0.961538, abs=1e-6)
    assert fit.residual_std == pytest.approx(0.141421, abs=1e-6)
    assert fit.peak_d() is None and fit.points == 4


@pytest.mark.parametrize("form,alpha,beta", [("bon", 0.8, 0.3), ("rl", 0.5, 0.2)])
def test_fits_recover_coefficients_from_noisy_synthetic_points(form, alpha, beta):
    g = torch.Generator().manual_seed(0)
    d = torch.linspace(0.1, 4.0, 60)
    y = [gao_curve(form, float(x), alpha, beta) + 0.01 * float(torch.randn(1, generator=g)) for x in d]
    fit = fit_gao(form, d.tolist(), y)
    assert fit.alpha == pytest.approx(alpha, abs=0.01) and fit.beta == pytest.approx(beta, abs=0.01)
    assert fit.residual_std == pytest.approx(0.01, rel=0.3) and fit.r2 > 0.99


def test_fit_refuses_too_few_points_and_unknown_forms():
    with pytest.raises(ValueError, match="at least two points"):
        fit_gao("bon", [0.0, 1.0], [0.0, 0.5])
    with pytest.raises(ValueError, match="unknown Gao form"):
        fit_gao("linear", [1.0, 2.0], [0.5, 0.7])


def test_best_of_n_expectation_by_hand():
    # One prompt, N = 3: proxy [0.1, 0.5, 0.3], gold [1, 2, 3]. Best of 2 over the 3 pairs:
    # {0,1} -> 1 (gold 2), {0,2} -> 2 (gold 3), {1,2} -> 1 (gold 2): mean 7/3.
    # The formula: sorted by proxy the golds are [1, 3, 2]; weights C(i-1,1)/C(3,2) = 0, 1/3, 2/3.
    proxy, gold = torch.tensor([[0.1, 0.5, 0.3]]), torch.tensor([[1.0, 2.0, 3.0]])
    assert best_of_n_expectation(proxy, gold, 2).item() == pytest.approx(7 / 3)
    assert best_of_n_expectation(proxy, gold, 1).item() == pytest.approx(2.0)  # the plain mean
    assert best_of_n_expectation(proxy, gold, 3).item() == pytest.approx(2.0)  # the top proxy's gold
    assert best_of_n_expectation(proxy, proxy, 3).item() == pytest.approx(0.5)


def test_best_of_n_expectation_matches_subset_enumeration():
    from itertools import combinations

    g = torch.Generator().manual_seed(1)
    proxy, gold = torch.randn(2, 7, generator=g), torch.randn(2, 7, generator=g)
    for n in (2, 4):
        for p in range(2):
            subsets = list(combinations(range(7), n))
            want = sum(gold[p, max(s, key=lambda i: proxy[p, i])].item() for s in subsets) / len(subsets)
            assert best_of_n_expectation(proxy, gold, n)[p].item() == pytest.approx(want, abs=1e-6)
