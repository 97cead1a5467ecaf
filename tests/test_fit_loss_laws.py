"""Loss laws: E + A C^-alpha recovered from synthetic data."""

import numpy as np
import pytest

from scaling.fit.loss_laws import fit_loss_vs_compute


def test_loss_vs_compute_recovered():
    rng = np.random.default_rng(1)
    C = np.logspace(17, 21, 9)
    L = (1.7 + 30.0 * C**-0.08) * np.exp(rng.normal(0, 0.002, C.size))
    fit = fit_loss_vs_compute(C, L, n_boot=100)
    assert fit.params["E"] == pytest.approx(1.7, rel=0.1)
    assert fit.params["alpha"] == pytest.approx(0.08, rel=0.2)
    assert fit.interval["alpha"][0] <= 0.08 <= fit.interval["alpha"][1]


def _saturating_points(seed: int, budgets: int, E=1.7, A=1.9e5, alpha=0.3):
    rng = np.random.default_rng(seed)
    C = np.geomspace(1e17, 1e20, budgets)
    L = (E + A * C**-alpha) * np.exp(rng.normal(0, rng.uniform(0.002, 0.005), budgets))
    return C, L, lambda c: E + A * c**-alpha


def test_the_estimate_sits_inside_its_interval_not_at_its_edge():
    """From points alone, linearised t draws pushed through E + A C^-alpha put the estimate at the 1st-4th percentile
    of its own interval; the parametric bootstrap, refitted within the bounds, keeps it central."""
    positions = []
    for seed in range(5):
        C, L, _ = _saturating_points(seed, 7)
        p = fit_loss_vs_compute(C, L, seed=seed).predict(C=3 * C[-1])
        positions.append((p.value - p.interval[0]) / (p.interval[1] - p.interval[0]))
    assert 0.3 < np.median(positions) < 0.7, positions


@pytest.mark.statistics
@pytest.mark.parametrize("budgets", [6, 8])
def test_saturating_loss_intervals_cover_at_3x_and_10x(budgets):
    """E + A C^-alpha from 6 or 8 points with 0.2-0.5% noise: the 95% interval at 3x and 10x the largest budget
    holds the truth in 92.5-97.5% of 200 sets, 95% within 2 binomial sd (it was 66-69%; over 600 sets of 8 budgets
    the rates are 94.0% and 93.2%)."""
    hits = {3: 0, 10: 0}
    for seed in range(200):
        C, L, truth = _saturating_points(seed, budgets)
        law = fit_loss_vs_compute(C, L, seed=seed)
        for f in hits:
            lo, hi = law.predict(C=f * C[-1]).interval
            hits[f] += lo <= truth(f * C[-1]) <= hi
    assert all(0.925 <= h / 200 <= 0.975 for h in hits.values()), hits


def test_a_law_without_its_floor_is_kept_as_the_plausible_other_form():
    """Points with a clear floor: the power law without one parts from E + A C^-alpha at 10x beyond the largest
    budget, and the verdict says the form decides the answer there."""
    from scaling.fit.verdict import judge

    C = np.geomspace(1e17, 1e20, 7)
    L = 1.7 + 1.9e5 * C**-0.3
    law = fit_loss_vs_compute(C, L * np.exp(np.random.default_rng(0).normal(0, 0.001, 7)))
    assert set(law.diagnostics["forms"]) == {"power law, no floor (a C^b)"}
    assert abs(law.diagnostics["held_out_error"]) < 0.01
    assert law.diagnostics["forms"]["power law, no floor (a C^b)"]["held_out_error"] < -0.01  # no floor: too low
    v = judge(law, target_flops=1e21)
    assert any(r.startswith("model form: power law, no floor") for r in v["reasons"]), v


def _envelope_coverage(sweeps) -> tuple[int, int, list[float]]:
    """Over (runs, truth) sweeps on an offset power law, fitted as `scaling fit` does: how often the loss law's 95%
    interval at 3x the largest budget holds the truth, how often the held-out largest budget lies in its
    prediction interval, and the held-out relative misses."""
    from scaling.fit.generators import true_envelope
    from scaling.fit.inputs import Runs
    from scaling.fit.report import fit_all

    hits, held, misses = 0, 0, []
    for seed, (df, truth) in enumerate(sweeps):
        report = fit_all(Runs(df=df, source="synthetic"), n_boot=200, seed=seed, only=("loss_vs_compute",))
        target = 3 * df["flops"].max()
        lo, hi = report.laws["loss_vs_compute"].predict(C=target).interval
        hits += lo <= true_envelope(target, **truth) <= hi
        item = report.held_out["loss"]
        held += item["interval"][0] <= item["achieved"] <= item["interval"][1]
        misses.append(abs(item["relative_error"]))
    return hits, held, misses


@pytest.mark.statistics
def test_envelope_loss_intervals_cover_at_3x_on_an_offset_power_law_with_seed_noise():
    """A wind tunnel's rungs (5 budgets over a decade, 2 seeds each) drawn from E + B (C + C_b)^-alpha, not the
    fitter's form, with seed noise of 0.02-0.09 nats, fitted as `scaling fit` does (each budget's mean over its
    seeds; the best seed would read the noise as progress, 0.56 sd too low at 2 seeds): the loss law's 95% interval
    at 3x the largest budget holds the truth in 88-99% of 100 sweeps (97% measured), and refitted without the
    largest budget it predicts that budget within its prediction interval as often (92% measured), missing by a
    median 2.9%."""
    from scaling.fit.generators import envelope_sweep

    hits, held, misses = _envelope_coverage(envelope_sweep(seed) for seed in range(100))
    assert 0.88 <= hits / 100 <= 0.99, hits
    assert 0.88 <= held / 100 <= 0.99, held
    assert np.median(misses) < 0.05, np.median(misses)


@pytest.mark.statistics
@pytest.mark.parametrize("ratio", [1.0, 3.0])
def test_wind_tunnel_loss_intervals_cover_at_3x_with_bowls_of_four_runs(ratio):
    """`make wind-tunnel`'s design (5 rungs over 8x, each an lr bowl of four runs around a missed lr law) on an
    offset power law, seed noise falling with the budget as measured on the CPU, symmetric or asymmetric bowls: the
    loss law's 95% interval at 3x the largest budget holds the truth in 88-99% of 80 sweeps (97% and 94% measured
    over 100), and the held-out largest budget lies inside its prediction interval as often. Refitting the law per
    run-level resample instead covered 78%."""
    from scaling.fit.generators import wind_tunnel_sweep

    hits, held, _ = _envelope_coverage(wind_tunnel_sweep(seed, ratio=ratio) for seed in range(80))
    assert 0.88 <= hits / 80 <= 0.99, hits
    assert 0.88 <= held / 80 <= 0.99, held


def test_run_level_resamples_test_the_form_and_the_points_scatter_makes_the_interval():
    """With >= 4 budgets the interval comes from the points' scatter (parametric, t-like), the run-level resamples
    only test the form; with 3 budgets (no dof) they are all there is, and the law is refitted per resample."""
    rng = np.random.default_rng(0)
    C = np.geomspace(1e11, 8e11, 5)
    L = 0.9 + 1.1e4 * C**-0.36 + rng.normal(0, 0.01, 5)
    R = L[:, None] + rng.normal(0, 0.01, (5, 100))
    law = fit_loss_vs_compute(C, L, replicates=R)
    assert law.method.startswith("parametric bootstrap") and law.diagnostics["lack_of_fit"]["dof"] >= 2
    three = fit_loss_vs_compute(C[::2], L[::2], replicates=R[::2])
    assert three.method.startswith("run-level bootstrap, 100 resamples")
    lo, hi = three.predict(C=3 * C[-1]).interval
    assert lo < three.value(C=3 * C[-1]) < hi
