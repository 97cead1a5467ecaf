"""Efficiency leverage: Ling's published law, leverage from loss-compute curves, the joint and granularity laws."""

import numpy as np
import pandas as pd
import pytest

from scaling.fit.leverage import LingELCoefficients, best_granularity, leverage_table, ling_el


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
        rows.append({"family": "dense", "budget": C, "flops": C, "loss": 10 * C**-0.05, "activation_ratio": 1.0,
                     "granularity": 1.0})
        rows.append({"family": "A0.1-G4", "budget": C, "flops": C, "loss": 10 * (2 * C) ** -0.05,
                     "activation_ratio": 0.1, "granularity": 4.0})
    table = leverage_table(pd.DataFrame(rows))
    assert table["el"].to_numpy() == pytest.approx([2.0, 2.0, 2.0])
    from scaling.fit.leverage import el_vs_compute, family_curves, family_losses

    losses, reps, how = family_losses(pd.DataFrame(rows))
    assert how == "matched" and not reps  # no lr grid, one run per budget: nothing to resample
    law = el_vs_compute(family_curves(losses, reps), "A0.1-G4")
    assert law.params["a"] == pytest.approx(2.0, rel=1e-6) and law.params["b"] == pytest.approx(0.0, abs=1e-9)


def test_ling_joint_law_recovered_from_its_own_predictions():
    from scaling.fit.leverage import coefficients_from_fit, fit_ling_joint

    rng = np.random.default_rng(0)
    rows = [{"activation_ratio": A, "granularity": G, "budget": C, "C": C,
             "el": float(ling_el(A, G, C)) * np.exp(rng.normal(0, 0.005))}
            for A in (0.02, 0.05, 0.1, 0.25, 0.5) for G in (2, 4, 8, 12, 16) for C in (1e18, 1e20, 1e22)]
    fit = fit_ling_joint(pd.DataFrame(rows))
    k = coefficients_from_fit(fit)
    assert best_granularity(k) == pytest.approx(best_granularity(), rel=0.1)
    for A, G, C in ((0.031, 12, 1e22), (0.1, 4, 1e19)):
        assert ling_el(A, G, C, k) == pytest.approx(ling_el(A, G, C), rel=0.05)


def test_el_peaks_in_granularity():
    from scaling.fit.leverage import fit_el_vs_granularity

    rows = [{"granularity": G, "budget": 1e20, "C": 1e20, "el": float(ling_el(0.05, G, 1e20))}
            for G in (2, 4, 8, 12, 16, 24)]
    fit, best = fit_el_vs_granularity(pd.DataFrame(rows))
    assert best == pytest.approx(best_granularity(), rel=0.05)
