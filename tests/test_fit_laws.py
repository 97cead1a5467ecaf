"""Fits recover known laws from synthetic data, within their reported intervals; Ling's EL law as published."""

import numpy as np
import pandas as pd
import pytest

from scaling.fit.leverage import LingELCoefficients, best_granularity, leverage_table, ling_el
from scaling.fit.loss_laws import fit_loss_vs_compute
from scaling.fit.optima import optimum_points, parse_method, quadratic_optimum
from scaling.fit.powerlaw import FitError, fit_power_law, predict_power_law


def test_power_law_recovered_within_its_intervals_in_most_seeds():
    covered_a = covered_b = 0
    seeds = 40
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        C = np.logspace(17, 20, 12)
        y = 0.3 * C**-0.125 * np.exp(rng.normal(0, 0.05, C.size))  # DeepSeek's lr law with 5% noise
        fit = fit_power_law("lr_opt", {"C": C}, y, n_boot=400, seed=seed)
        covered_a += fit.interval["a"][0] <= 0.3 <= fit.interval["a"][1]
        covered_b += fit.interval["b"][0] <= -0.125 <= fit.interval["b"][1]
    assert covered_a >= 0.9 * seeds and covered_b >= 0.9 * seeds


def test_two_variable_power_law_and_prediction():
    rng = np.random.default_rng(0)
    N, D = rng.uniform(1e8, 1e10, 50), rng.uniform(1e9, 1e11, 50)
    lr = 1.79 * N**-0.713 * D**0.307 * np.exp(rng.normal(0, 0.02, 50))
    fit = fit_power_law("lr_opt_nd", {"N": N, "D": D}, lr, n_boot=200)
    assert fit.formula == "a * N^b * D^c"
    assert fit.params["b"] == pytest.approx(-0.713, abs=0.02) and fit.params["c"] == pytest.approx(0.307, abs=0.02)
    assert predict_power_law(fit, N=1e9, D=2e10) == pytest.approx(1.79 * 1e9**-0.713 * 2e10**0.307, rel=0.05)
    assert fit.r2 > 0.95


def test_power_law_refuses_too_little_data():
    with pytest.raises(FitError, match="need at least 3"):
        fit_power_law("lr_opt", {"C": [1e17, 1e18]}, [1e-3, 8e-4])
    with pytest.raises(FitError, match="does not vary"):
        fit_power_law("lr_opt", {"C": [1e17, 1e17, 1e17]}, [1e-3, 8e-4, 9e-4])


def test_loss_vs_compute_recovered():
    rng = np.random.default_rng(1)
    C = np.logspace(17, 21, 9)
    L = (1.7 + 30.0 * C**-0.08) * np.exp(rng.normal(0, 0.002, C.size))
    fit = fit_loss_vs_compute(C, L, n_boot=100)
    assert fit.params["E"] == pytest.approx(1.7, rel=0.1)
    assert fit.params["alpha"] == pytest.approx(0.08, rel=0.2)
    assert fit.interval["alpha"][0] <= 0.08 <= fit.interval["alpha"][1]


def test_quadratic_optimum_finds_the_bowl_between_grid_points():
    lrs, batches = np.geomspace(1e-3, 1.6e-2, 5), np.geomspace(2**14, 2**18, 5)
    rows = [{"lr": lr, "batch_tokens": b, "loss": 2.0 + 0.05 * np.log(lr / 5e-3) ** 2 + 0.03 * np.log(b / 6e4) ** 2}
            for lr in lrs for b in batches]
    opt = quadratic_optimum(pd.DataFrame(rows))
    assert opt["lr"] == pytest.approx(5e-3, rel=1e-6) and opt["batch_tokens"] == pytest.approx(6e4, rel=1e-6)
    assert opt["note"] == ""
    lr_only = quadratic_optimum(pd.DataFrame([r for r in rows if r["batch_tokens"] == batches[2]]))
    assert lr_only["lr"] == pytest.approx(5e-3, rel=1e-6)
    edge = quadratic_optimum(pd.DataFrame([{"lr": lr, "batch_tokens": 1.0, "loss": -np.log(lr)} for lr in lrs]))
    assert edge["lr"] == lrs[-1] and "best run" in edge["note"]  # no bowl: the best run, said so


def test_near_optimal_protocol_keeps_runs_within_tolerance():
    df = pd.DataFrame({"params": [1, 1, 1, 2, 2], "tokens": [5, 5, 5, 5, 5], "lr": [1, 2, 3, 1, 2],
                       "batch_tokens": [1] * 5, "loss": [2.0, 2.004, 2.1, 3.0, 3.001]})
    pts = optimum_points(df, ["params", "tokens"], "near-optimal:0.0025")
    assert sorted(pts["loss"]) == [2.0, 2.004, 3.0, 3.001]
    assert parse_method("near-optimal:0.5%") == ("near-optimal", 0.005)
    with pytest.raises(ValueError, match="not 'quadratic'"):
        parse_method("argmin")


def test_ling_published_el_law():
    """Ling's coefficients with log10 C and log2 G: EL ~ 7.2 at A = 3.1%, G = 12, C = 1e22; best G ~ 11."""
    assert ling_el(0.031, 12, 1e22) == pytest.approx(7.2, abs=0.15)
    assert best_granularity() == pytest.approx(11.3, abs=0.5)
    assert ling_el(1.0, 12, 1e22) < ling_el(0.1, 12, 1e22) < ling_el(0.031, 12, 1e22)  # leverage grows as A falls
    natural = LingELCoefficients(log_base_C=np.e, log_base_G=np.e)  # another reading of the bases: not the claims
    assert abs(ling_el(0.031, 12, 1e22, natural) - 7.2) > 1


def test_leverage_from_loss_compute_curves():
    """A family that reaches the dense loss with half the compute has EL = 2 at every budget."""
    rows = []
    for C in (1e18, 3e18, 1e19):
        rows.append({"family": "dense", "budget": C, "loss": 10 * C**-0.05, "activation_ratio": 1.0,
                     "granularity": 1.0})
        rows.append({"family": "A0.1-G4", "budget": C, "loss": 10 * (2 * C) ** -0.05, "activation_ratio": 0.1,
                     "granularity": 4.0})
    table = leverage_table(pd.DataFrame(rows))
    assert table["el"].to_numpy() == pytest.approx([2.0, 2.0, 2.0])
    from scaling.fit.leverage import el_vs_compute, family_curves

    law = el_vs_compute(family_curves(pd.DataFrame(rows)), "A0.1-G4")
    assert law.params["a"] == pytest.approx(2.0, rel=1e-6) and law.params["b"] == pytest.approx(0.0, abs=1e-9)


def test_quadratic_optimum_on_a_cross_design():
    """An lr line at one batch plus a batch line at one lr (the demo's design): separable parabolas."""
    def loss(lr, b):
        return 2.0 + 0.05 * np.log(lr / 5e-3) ** 2 + 0.03 * np.log(b / 1500) ** 2

    rows = [{"lr": lr, "batch_tokens": 1024.0, "loss": loss(lr, 1024)} for lr in np.geomspace(1e-3, 1.6e-2, 5)]
    rows += [{"lr": 4e-3, "batch_tokens": b, "loss": loss(4e-3, b)} for b in (512.0, 2048.0, 4096.0)]
    rows += [{"lr": 4e-3, "batch_tokens": 1024.0, "loss": loss(4e-3, 1024)}]
    opt = quadratic_optimum(pd.DataFrame(rows))
    assert opt["lr"] == pytest.approx(5e-3, rel=1e-6)
    assert opt["batch_tokens"] == pytest.approx(1500, rel=1e-6)
    assert opt["note"] == ""


def test_ling_joint_law_recovered_from_its_own_predictions():
    from scaling.fit.leverage import coefficients_from_fit, fit_ling_joint

    rng = np.random.default_rng(0)
    rows = [{"activation_ratio": A, "granularity": G, "budget": C,
             "el": float(ling_el(A, G, C)) * np.exp(rng.normal(0, 0.005))}
            for A in (0.02, 0.05, 0.1, 0.25, 0.5) for G in (2, 4, 8, 12, 16) for C in (1e18, 1e20, 1e22)]
    fit = fit_ling_joint(pd.DataFrame(rows))
    k = coefficients_from_fit(fit)
    assert best_granularity(k) == pytest.approx(best_granularity(), rel=0.1)
    for A, G, C in ((0.031, 12, 1e22), (0.1, 4, 1e19)):
        assert ling_el(A, G, C, k) == pytest.approx(ling_el(A, G, C), rel=0.05)


def test_el_peaks_in_granularity():
    from scaling.fit.leverage import fit_el_vs_granularity

    rows = [{"granularity": G, "budget": 1e20, "el": float(ling_el(0.05, G, 1e20))} for G in (2, 4, 8, 12, 16, 24)]
    fit, best = fit_el_vs_granularity(pd.DataFrame(rows))
    assert best == pytest.approx(best_granularity(), rel=0.05)
