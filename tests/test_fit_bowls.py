"""The bowl of one group: an asymmetric bowl's vertex is found exactly where a symmetric parabola's is pulled to the
shallow side; the asymmetry is shared by a family's budgets; each seed may sit at its own level."""

import numpy as np
import pandas as pd
import pytest

from scaling.fit.bowls import design, optima_of_groups, seed_contrasts
from scaling.fit.generators import bowl
from scaling.fit.optima import group_optima

LRS = 4e-3 * 2.0 ** np.arange(-2, 3)  # the demo's grid: 5 learning rates x2 apart


def _group(lr_star: float, ratio: float, offsets=(0.0,), floor: float = 2.0) -> pd.DataFrame:
    rows = [{"params": 1.0, "tokens": floor, "lr": lr, "batch_tokens": 2048.0, "seed": s,
             "loss": floor + float(bowl(np.log(lr / lr_star), 0.12, ratio, "piecewise")) + off}
            for lr in LRS for s, off in enumerate(offsets)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("ratio", [1.0, 3.0, 14.0])
def test_an_asymmetric_bowl_has_its_vertex_found_exactly(ratio):
    """Noiseless bowls, curvature above lr* `ratio` times that below, at three budgets: the vertex is recovered to
    1e-4 in ln lr, the shared ratio too; a symmetric parabola is pulled towards the shallow side (x0.7 at ratio 3)."""
    lr_stars = (3.1e-3, 5.3e-3, 2.2e-3)
    df = pd.concat([_group(s, ratio, floor=2.0 + i) for i, s in enumerate(lr_stars)], ignore_index=True)
    opt = group_optima(df, ["params", "tokens"], n_boot=0).groups
    assert np.log(opt["lr"].to_numpy() / np.array(lr_stars)) == pytest.approx(0, abs=1e-4)
    assert opt["curvature_ratio"].iloc[0] == pytest.approx(ratio, rel=1e-3)
    sym = group_optima(df, ["params", "tokens"], n_boot=0, asymmetric=False).groups
    bias = np.log(sym["lr"].to_numpy() / np.array(lr_stars))
    assert (np.abs(bias) < 1e-6).all() if ratio == 1 else (bias < -0.1).all()


def test_each_seed_may_sit_at_its_own_level():
    """Two seeds whose runs differ by 0.05 nats at every lr (their initialisation and data order): the vertex is
    exact and the floor is their mean."""
    df = _group(3.1e-3, 3.0, offsets=(0.0, 0.05))
    opt = group_optima(df, ["params", "tokens"], n_boot=200).groups.iloc[0]
    assert opt["lr"] == pytest.approx(3.1e-3, rel=1e-4) and opt["loss"] == pytest.approx(2.025, abs=1e-6)
    assert opt["noise_sd"] == pytest.approx(0, abs=1e-6)


def test_seed_contrasts_sum_to_zero_and_need_two_runs_per_seed():
    c = seed_contrasts(np.array([0, 1, 0, 1, 2, 2]))
    assert c.shape == (6, 2) and np.allclose(c.sum(axis=0), 0)
    assert seed_contrasts(np.array([0, 0, 0])) is None and seed_contrasts(np.array([0, 0, 1])) is None


def test_three_learning_rates_get_a_symmetric_parabola_and_a_monotone_line_no_bowl():
    x = np.log(LRS[:3])
    assert design(x, np.zeros(3)).asymmetric is None
    d = design(np.log(LRS), np.zeros(5))
    (found,), _ = optima_of_groups([d], [(-np.log(LRS))[:, None]])  # loss falls all the way: no bowl
    assert not found[3][0]
