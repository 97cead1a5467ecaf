"""Loss laws (ARCHITECTURE section 8).

- ``loss_vs_compute``: L(C) = E + A * C^-alpha, least squares in log loss, from a grid of starts.
- ``chinchilla`` (approach 3): L(N, D) = E + A / N^alpha + B / D^beta, Huber loss (delta 1e-3) on log-loss
  residuals, *summed* (averaging makes L-BFGS stop early), L-BFGS-B from a grid of starts in (log A, log B, log E,
  alpha, beta) as Hoffmann et al. and Epoch AI do, with bounds.
- ``isoflop`` (approach 2): per budget, a parabola of loss in ln N gives N_opt(C); then N_opt = a C^b and
  D_opt = a C^b (D_opt from C / (6 N_opt) unless tokens are given per run).
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import huber, logsumexp

from scaling.fit.powerlaw import FitError, LawFit, fit_power_law, percentile_interval, r_squared

HUBER_DELTA = 1e-3
MIN_POINTS_FOR_BOOTSTRAP = 6
"""A 3-parameter law on fewer points has resamples that mostly repeat the full fit: no honest interval."""


def _loss_vs_compute_objective(theta, logC, logL):
    """Sum of squared log-loss residuals and its exact gradient in (log E, log A, alpha)."""
    logE, logA, alpha = theta
    power = logA - alpha * logC
    pred = np.logaddexp(logE, power)
    r = pred - logL
    w_E, w_A = np.exp(logE - pred), np.exp(power - pred)
    grad = 2 * np.array([np.sum(r * w_E), np.sum(r * w_A), -np.sum(r * w_A * logC)])
    return float(np.sum(r * r)), grad


def fit_loss_vs_compute(C: np.ndarray, L: np.ndarray, n_boot: int = 200, seed: int = 0,
                        level: float = 0.95) -> LawFit:
    """L(C) = E + A * C^-alpha (fitted as log L = logsumexp(log E, log A - alpha log C))."""
    C, L = np.asarray(C, float), np.asarray(L, float)
    if len(np.unique(C)) < 4:
        raise FitError(f"loss_vs_compute: {len(np.unique(C))} distinct budget(s); E + A C^-alpha has 3 parameters, "
                       f"need at least 4 budgets")
    logC, logL = np.log(C), np.log(L)

    def solve(lc, ll, starts):
        best = None
        for start in starts:
            r = minimize(_loss_vs_compute_objective, start, args=(lc, ll), method="L-BFGS-B", jac=True,
                         bounds=[(None, ll.min()), (None, None), (1e-4, 3.0)],
                         options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 5000})  # tiny residuals: tight tols
            if best is None or r.fun < best.fun:
                best = r
        return best.x

    starts = []
    for frac, alpha in itertools.product([0.1, 0.5, 0.9], [0.05, 0.2, 0.5]):
        logE = np.log(frac) + logL.min()
        starts.append([logE, np.log(max(np.exp(logL.max()) - np.exp(logE), 1e-6)) + alpha * logC.min(), alpha])
    logE, logA, alpha = solve(logC, logL, starts)
    rng = np.random.default_rng(seed)
    boots = []
    notes = []
    if len(C) < MIN_POINTS_FOR_BOOTSTRAP:
        n_boot = 0
        notes.append(f"no interval: {len(C)} budgets are too few for a bootstrap of 3 parameters "
                     f"(need {MIN_POINTS_FOR_BOOTSTRAP})")
    for _ in range(n_boot):  # resamples start from the full fit (a warm start; the grid was searched once)
        idx = rng.integers(0, len(C), len(C))
        if len(np.unique(logC[idx])) >= 4:
            boots.append(solve(logC[idx], logL[idx], [[min(logE, logL[idx].min()), logA, alpha]]))
    boots = np.array(boots)
    pred = np.logaddexp(logE, logA - alpha * logC)
    params = {"E": float(np.exp(logE)), "A": float(np.exp(logA)), "alpha": float(alpha)}
    interval = {}
    if len(boots):
        interval = {"E": percentile_interval(np.exp(boots[:, 0]), level),
                    "A": percentile_interval(np.exp(boots[:, 1]), level),
                    "alpha": percentile_interval(boots[:, 2], level)}
    samples = {}
    if len(boots):
        samples = {"E": np.exp(boots[:, 0]), "A": np.exp(boots[:, 1]), "alpha": boots[:, 2]}
    return LawFit("loss_vs_compute", "E + A * C^-alpha", params, interval, r_squared(logL, pred), len(C),
                  notes=notes, samples=samples)


def predict_loss_vs_compute(fit: LawFit, C: float) -> float:
    p = fit.params
    return p["E"] + p["A"] * C ** -p["alpha"]


# ---- Chinchilla approach 3 -------------------------------------------------------------------------------------
def _chinchilla_objective(theta, logN, logD, logL, delta):
    a, b, e, alpha, beta = theta  # a = log A, b = log B, e = log E
    pred = logsumexp([a - alpha * logN, b - beta * logD, e * np.ones_like(logN)], axis=0)
    return np.sum(huber(delta, pred - logL))


CHINCHILLA_GRID = np.array(list(itertools.product(
    [0, 5, 10, 15, 20, 25], [0, 5, 10, 15, 20, 25], [-1, -0.5, 0, 0.5, 1, 1.5], [0, 0.5, 1, 1.5, 2],
    [0, 0.5, 1, 1.5, 2])), dtype=float)
"""Starts in (log A, log B, log E, alpha, beta): Hoffmann et al.'s grid, as Epoch AI's replication uses."""
REFINED_STARTS = 40


def _chinchilla_solve(logN, logD, logL, delta):
    # Evaluate the objective at all 5,400 grid starts at once, then run L-BFGS-B from the best REFINED_STARTS:
    # the same optimum as optimising from every start (checked on the Epoch data), 100x faster.
    g = CHINCHILLA_GRID[:, :, None]
    pred = logsumexp(np.stack([g[:, 0] - g[:, 3] * logN, g[:, 1] - g[:, 4] * logD,
                               np.broadcast_to(g[:, 2], (len(g), len(logN)))]), axis=0)
    scores = huber(delta, pred - logL).sum(axis=1)
    best = None
    for start in CHINCHILLA_GRID[np.argsort(scores)[:REFINED_STARTS]]:
        r = minimize(_chinchilla_objective, start, args=(logN, logD, logL, delta), method="L-BFGS-B",
                     bounds=[(0, 30), (0, 30), (-2, 2.5), (0, 2.5), (0, 2.5)])
        if best is None or r.fun < best.fun:
            best = r
    return best.x


def fit_chinchilla(N: np.ndarray, D: np.ndarray, L: np.ndarray, delta: float = HUBER_DELTA) -> LawFit:
    """Chinchilla approach 3 on (N, D, loss); no bootstrap (each solve runs 4,500 starts)."""
    N, D, L = (np.asarray(v, float) for v in (N, D, L))
    if len(L) < 6 or len(np.unique(N)) < 3 or len(np.unique(D)) < 3:
        raise FitError(f"chinchilla: {len(L)} runs with {len(np.unique(N))} sizes and {len(np.unique(D))} token "
                       f"counts; need at least 6 runs, 3 sizes and 3 token counts")
    logN, logD, logL = np.log(N), np.log(D), np.log(L)
    a, b, e, alpha, beta = _chinchilla_solve(logN, logD, logL, delta)
    pred = logsumexp([a - alpha * logN, b - beta * logD, e * np.ones_like(logN)], axis=0)
    params = {"E": float(np.exp(e)), "A": float(np.exp(a)), "B": float(np.exp(b)), "alpha": float(alpha),
              "beta": float(beta)}
    return LawFit("chinchilla", "E + A / N^alpha + B / D^beta", params, {}, r_squared(logL, pred), len(L))


# ---- IsoFLOP (approach 2) ---------------------------------------------------------------------------------------
def isoflop_optima(df: pd.DataFrame) -> pd.DataFrame:
    """Per budget with >= 3 sizes: the vertex of loss vs ln N (N_opt, the loss there) and D_opt = C / (6 N_opt)
    unless the runs give tokens (then tokens interpolated at N_opt on the same parabola's budget line)."""
    rows = []
    for budget, g in df.groupby("budget"):
        if g["params"].nunique() < 3:
            continue
        x = np.log(g["params"].to_numpy(float))
        c2, c1, c0 = np.polyfit(x, g["loss"].to_numpy(float), 2)
        if c2 <= 0:
            continue
        xv = -c1 / (2 * c2)
        if not x.min() - 1 <= xv <= x.max() + 1:
            continue
        n_opt = float(np.exp(xv))
        # tokens x params is about constant on a budget line: D_opt from the runs' own D*N product
        dn = float(np.median(g["tokens"].to_numpy(float) * g["params"].to_numpy(float)))
        rows.append({"budget": float(budget), "n_opt": n_opt, "d_opt": dn / n_opt, "loss": c0 + c1 * xv + c2 * xv**2,
                     "n_runs": len(g)})
    return pd.DataFrame(rows)


def fit_isoflop_laws(df: pd.DataFrame, n_boot: int = 1000) -> tuple[LawFit, LawFit, pd.DataFrame]:
    opt = isoflop_optima(df)
    if len(opt) < 2:
        raise FitError(f"isoflop: {len(opt)} budget(s) with a bowl over >= 3 model sizes; need at least 2")
    n_fit = fit_power_law("n_opt", {"C": opt["budget"]}, opt["n_opt"], n_boot=n_boot)
    d_fit = fit_power_law("d_opt", {"C": opt["budget"]}, opt["d_opt"], n_boot=n_boot)
    return n_fit, d_fit, opt
