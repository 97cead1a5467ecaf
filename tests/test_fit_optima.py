"""Optima per budget: the bowl's vertex, the near-optimal protocol, and run-level resamples."""

import numpy as np
import pandas as pd
import pytest

from scaling.fit.optima import group_optima, parse_method, quadratic_optimum


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
    pts = group_optima(df, ["params", "tokens"], "near-optimal:0.0025", n_boot=0).points
    assert sorted(pts["loss"]) == [2.0, 2.004, 3.0, 3.001]
    assert parse_method("near-optimal:0.5%") == ("near-optimal", 0.005)
    with pytest.raises(ValueError, match="not 'quadratic'"):
        parse_method("argmin")


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


def test_the_near_optimal_bootstrap_resamples_the_noise_not_the_grid():
    """Noiseless bowls: every resample has the same near-optimal set, so the law through it has no spread. Drawing
    runs with replacement (as before) dropped and repeated grid points, and the sets (and the law) moved."""
    from scaling.fit.optima import budget_optima

    rows = [{"params": 1.0, "tokens": C, "flops": C, "budget": C, "lr": lr, "batch_tokens": b, "seed": 0,
             "loss": 2.0 + 0.05 * np.log(lr / (0.3 * C**-0.25)) ** 2 + 0.03 * np.log(b / (50 * C**0.3)) ** 2}
            for C in (1e18, 1e19, 1e20) for lr in np.geomspace(1e-5, 1e-3, 6) for b in np.geomspace(1e5, 1e7, 6)]
    opt = budget_optima(pd.DataFrame(rows), "near-optimal:0.01", n_boot=50)
    sizes = {len(s) for s in opt.replicate_sets}
    assert len(opt.replicate_sets) == 50 and sizes == {len(opt.points)}
    assert all(s["lr"].tolist() == opt.points["lr"].tolist() for s in opt.replicate_sets)


def test_a_seed_column_that_is_not_numbers_is_ignored_not_fatal():
    lrs = 4e-3 * 2.0 ** np.arange(-2, 3)
    rows = [{"params": 1.0, "tokens": 1.0, "lr": lr, "batch_tokens": 1.0, "seed": s,
             "loss": 2.0 + 0.1 * np.log(lr / 3e-3) ** 2 + (0.05 if s == "b" else 0.0)} for lr in lrs for s in "ab"]
    opt = group_optima(pd.DataFrame(rows), ["params", "tokens"], n_boot=50).groups.iloc[0]
    assert opt["lr"] == pytest.approx(3e-3, rel=0.05)
