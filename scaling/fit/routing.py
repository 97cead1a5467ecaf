"""Clark et al.'s unified scaling law for routed language models (arXiv 2202.01169, Eq. 8 and Table 3).

    log10 L(N, E) = a log10 N + b log10 Ehat + c log10 N log10 Ehat + d,
    1/Ehat = 1/(E - 1 + (1/E_start - 1/E_max)^-1) + 1/E_max,

N the parameters one token sees (their "dense" count), E the experts per routed layer (1: the dense model, for
which Ehat = E_start). The saturating Ehat is the transform `law.saturating_activation` applies to an activation
ratio, here applied to E - 1. Fitted by least squares in log10 L over every (N, E) configuration's best run, with
Student-t intervals from the linearised fit (parameters the data cannot see are declared, not given a point
interval).

Efficiency leverage follows from the law: the dense model that reaches the loss of (N, E) has N_eq parameters,
log10 N_eq = ((a + c l) log10 N + b (l - l1)) / (a + c l1) with l = log10 Ehat(E), l1 = log10 Ehat(1); at equal
tokens and equal FLOPs per token EL = N_eq / N (Clark's "effective parameter count" over N).

Published (S-Base, from the authors' released runs, google-deepmind/scaling_laws_for_routing):
a = -0.082, b = -0.108, c = 0.009, d = 1.104, E_start = 1.847, E_max = 314.478.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import least_squares

from scaling.fit.law import FORMS, FitError, LawFit, saturating_activation
from scaling.fit.powerlaw import r_squared
from scaling.fit.uncertainty import percentile_interval, t_draws, undetermined

CLARK_S_BASE = {"a": -0.082, "b": -0.108, "c": 0.009, "d": 1.104, "E_start": 1.847, "E_max": 314.478}
NAMES = ["a", "b", "c", "d", "E_start", "E_max"]


def log_ehat(E, E_start, E_max):
    """log10 of Clark's saturating expert count."""
    return np.log10(saturating_activation(np.asarray(E, float) - 1, E_start, E_max))


def log_loss(p: dict, N, E):
    """log10 L of the law (its one formula lives in law.py)."""
    return np.log10(FORMS["routing"](p, {"N": N, "E": E}, ("N", "E")))


def _params(theta) -> dict:
    return {"a": theta[0], "b": theta[1], "c": theta[2], "d": theta[3], "E_start": np.exp(theta[4]),
            "E_max": np.exp(theta[5])}


def fit_routing_law(N, E, L, seed: int = 0) -> LawFit:
    """The law through each (N, E) configuration's loss `L` (the best run of each), least squares in log10 L from a
    grid of starts for the saturation; Student-t draws (n - 6 dof) for intervals."""
    N, E, L = (np.asarray(v, float) for v in (N, E, L))
    if len(np.unique(E)) < 4 or len(np.unique(N)) < 3 or len(L) < 8:
        raise FitError(f"routing: {len(L)} configurations with {len(np.unique(N))} sizes and {len(np.unique(E))} "
                       f"expert counts; need at least 8, 3 sizes and 4 expert counts (dense, E = 1, counts)")
    y = np.log10(L)

    def residuals(theta):
        return log_loss(_params(theta), N, E) - y

    best = None
    for E_start in (1.5, 2.0, 4.0):
        for E_max in (50.0, 300.0, 2000.0):
            r = least_squares(residuals, [-0.08, -0.1, 0.01, 1.1, math.log(E_start), math.log(E_max)],
                              x_scale="jac", max_nfev=5000)
            if best is None or r.cost < best.cost:
                best = r
    theta, dof = best.x, len(y) - 6
    blind = undetermined(best.jac, NAMES)
    samples, interval, method = {}, {}, "none"
    if dof >= 1 and not blind:
        r0 = residuals(theta)
        cov = (r0 @ r0 / dof) * np.linalg.pinv(best.jac.T @ best.jac)
        draws = t_draws(theta, cov, dof, 2000, np.random.default_rng(seed))
        samples = {k: np.asarray(v) for k, v in _params(draws.T).items()}
        interval = {k: percentile_interval(v) for k, v in samples.items()}
        method = f"Student-t (linearised), {dof} dof"
    params = {k: float(v) for k, v in _params(theta).items()}
    return LawFit("routing", "routing", ("N", "E"), params, interval, r_squared(y, residuals(theta) + y), len(y),
                  notes=[f"the data cannot determine {', '.join(blind)}: no interval"] if blind else [],
                  samples=samples, method=method,
                  fitted_range={"N": [float(N.min()), float(N.max())], "E": [float(E.min()), float(E.max())]},
                  diagnostics={"dof": dof, "undetermined": blind})


def routing_leverage(law: LawFit, N: float, E: float, level: float = 0.95) -> tuple[float, list[float] | None]:
    """EL of (N, E) by the law: N_eq / N, N_eq the dense parameters reaching the same loss; and its interval over
    the law's resamples."""
    def el(p):
        lN, l, l1 = math.log10(N), log_ehat(E, p["E_start"], p["E_max"]), log_ehat(1.0, p["E_start"], p["E_max"])
        return 10 ** (((p["a"] + p["c"] * l) * lN + p["b"] * (l - l1)) / (p["a"] + p["c"] * l1) - lN)

    value = float(el(law.params))
    if not law.samples:
        return value, None
    with np.errstate(over="ignore", invalid="ignore"):
        draws = np.asarray(el(law.samples), float)
    draws = draws[np.isfinite(draws)]
    return value, percentile_interval(draws, level) if len(draws) else None
