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
