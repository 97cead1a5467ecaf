"""Interval arithmetic: Student-t intervals and draws cover at their nominal rate, and the lack-of-fit test
widens only when the scatter exceeds the noise."""

import numpy as np
import pytest

from scaling.fit.uncertainty import (
    lack_of_fit,
    percentile_interval,
    prediction_interval,
    stream,
    t_draws,
    t_interval,
    undetermined,
    widen,
)


def test_t_intervals_of_a_mean_cover_at_their_nominal_rate_neither_narrower_nor_wider():
    """2000 samples of 5 normal draws: the 95% interval of the mean holds the truth in 94-96% of them (binomial
    sd 0.5%), and intervals at 90% and 99% do not pass for 95% ones."""
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, size=(2000, 5))
    means, ses = x.mean(axis=1), x.std(axis=1, ddof=1) / np.sqrt(5)

    def cover(level):
        ivs = [t_interval(m, s, 4, level) for m, s in zip(means, ses, strict=True)]
        return np.mean([lo <= 1.0 <= hi for lo, hi in ivs])

    assert 0.935 <= cover(0.95) <= 0.965
    assert cover(0.90) < 0.935 and cover(0.99) > 0.965  # the check has power both ways


def test_t_draws_have_the_given_centre_and_covariance():
    rng = np.random.default_rng(1)
    cov = np.array([[1.0, 0.6], [0.6, 2.0]])
    draws = t_draws(np.array([3.0, -1.0]), cov, dof=200, n=40_000, rng=rng)
    assert np.allclose(draws.mean(axis=0), [3.0, -1.0], atol=0.03)
    assert np.allclose(np.cov(draws.T), cov * 200 / 198, atol=0.06)


def test_percentile_interval_and_widen():
    assert percentile_interval(np.arange(101), 0.9) == pytest.approx([5.0, 95.0])
    assert percentile_interval([1.0, np.nan, 3.0], 1.0) == [1.0, 3.0]
    assert np.allclose(widen(np.array([[1.0], [3.0]]), np.array([2.0]), 2.0), [[0.0], [4.0]])


def test_lack_of_fit_widens_by_the_excess_scatter_only():
    rng = np.random.default_rng(2)
    n, var = 400, np.full(400, 0.04)
    honest = lack_of_fit(rng.normal(0, 0.2, n), var, dof=n - 2)
    assert honest["birge"] == pytest.approx(1.0, abs=0.02) and honest["p"] > 0.05
    excess = lack_of_fit(rng.normal(0, 0.4, n), var, dof=n - 2)  # twice the noise the points claim
    assert excess["p"] < 1e-6 and excess["birge"] == pytest.approx(2.0, rel=0.1)
    assert lack_of_fit(np.ones(2), np.ones(2), dof=0)["p"] is None


def test_birge_widening_is_smooth_in_the_scatter():
    """One degree of freedom: as the scatter grows past what the noise explains, the widening grows with it
    (sqrt(chi2 / dof)); no jump from x1 to x1.96 where p crosses 0.05."""
    factors = [lack_of_fit(np.array([r]), np.array([1.0]), dof=1)["birge"] for r in np.linspace(0.5, 2.5, 81)]
    assert factors[0] == 1.0 and np.all(np.diff(factors) >= 0)
    assert max(np.diff(factors)) < 0.03  # a step of 0.025 in the residual moves the factor by less than 0.03
    assert lack_of_fit(np.array([1.9]), np.array([1.0]), dof=1)["birge"] == pytest.approx(1.9)


def test_undetermined_parameters_are_named_not_given_a_point_interval():
    x = np.linspace(0, 1, 6)
    J = np.column_stack([np.ones(6), x, np.zeros(6)])  # the third parameter moves no point
    assert undetermined(J, ["a", "b", "c"]) == ["c"]
    J = np.column_stack([np.ones(6), x, 2 * x + 1e-12 * x**2])  # b and c move the points only together
    assert undetermined(J, ["a", "b", "c"]) == ["b", "c"]
    assert undetermined(np.column_stack([np.ones(6), x]), ["a", "b"]) == []


def test_independent_streams_by_name():
    a, b = stream(0, "optima", "dense"), stream(0, "optima", "E64")
    assert a != b and a == stream(0, "optima", "dense") and a != stream(1, "optima", "dense")
    draws = [np.random.default_rng(s).standard_normal(2000) for s in (a, b)]
    assert abs(np.corrcoef(*draws)[0, 1]) < 0.1


def test_a_prediction_interval_adds_the_measurement_noise_in_quadrature():
    iv = prediction_interval(1.0, [0.5, 2.0], 1.0, [0.5, 2.0], log=True)
    assert iv == pytest.approx([0.5 ** np.sqrt(2), 2.0 ** np.sqrt(2)])
    assert prediction_interval(3.0, [2.9, 3.1], 3.05, None, log=False) == pytest.approx([2.9, 3.1])
    assert prediction_interval(3.0, None, 3.0, [2.0, 4.0], log=False) is None
