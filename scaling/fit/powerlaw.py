"""Power laws fitted in log space (ARCHITECTURE section 8).

`fit_power_law(name, variables, y)` fits ``y = a * prod_i x_i^b_i`` by ordinary least squares of ln y on the ln x_i
(one variable: ``a * C^b``; two: ``a * N^b * D^c``). Intervals (see `uncertainty.py`): with `replicates` (each
point re-estimated from resampled runs), the law is refitted per resample, widened when the points scatter about
it more than their noise explains; without, Student-t with n - p degrees of freedom.
"""

from __future__ import annotations

import numpy as np

from scaling.fit.law import EXPONENT_NAMES, FitError, LawFit
from scaling.fit.uncertainty import MIN_RESAMPLES, percentile_interval, run_level, t_draws, t_interval

T_DRAWS = 2000
"""Draws from the t distribution of the estimate, for prediction intervals (cheap: no refitting)."""


def r_squared(y: np.ndarray, y_hat: np.ndarray) -> float:
    ss_res = float(np.sum((y - y_hat) ** 2))
    ss_tot = float(np.sum((y - np.mean(y)) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")


COLLINEAR_SPREAD = float(np.log(1.1))
"""A variable of a several-variable power law that varies by less than x1.1 beyond what the others explain (in
logs) moved with them: their exponents cannot be told apart (a ladder at fixed tokens per parameter has D = k N)."""


def _refuse_collinear(name: str, names: list[str], logs: list[np.ndarray]) -> None:
    if len(logs) < 2:
        return
    for var, lg in zip(names, logs, strict=True):
        if np.ptp(lg) < COLLINEAR_SPREAD:
            raise FitError(f"{name}: {var} varies by only x{np.exp(np.ptp(lg)):.4g} over the points, so its exponent "
                           f"cannot be determined: sweep {var} over a wider range")
    for j, lg in enumerate(logs):
        others = np.column_stack([np.ones(len(lg)), *(x for i, x in enumerate(logs) if i != j)])
        resid = lg - others @ np.linalg.lstsq(others, lg, rcond=None)[0]
        if np.ptp(resid) < COLLINEAR_SPREAD:
            rest = ", ".join(n for i, n in enumerate(names) if i != j)
            raise FitError(f"{name}: {names[j]} moved with {rest} (beyond a power of {rest} it varies by only "
                           f"x{np.exp(np.ptp(resid)):.4g}), so their exponents cannot be told apart: vary them "
                           f"independently (several sizes per token count, or an IsoFLOP sweep)")


def fit_power_law(name: str, variables: dict[str, np.ndarray], y: np.ndarray, n_boot: int = 1000,
                  seed: int = 0, level: float = 0.95, replicates: np.ndarray | None = None,
                  replicate_sets: list[tuple[dict, np.ndarray]] | None = None) -> LawFit:
    """Fit y = a * x1^b * x2^c ... (variables in order) by OLS in log space, with `level` intervals.

    `replicates`: an (n points, R) array of run-level resamples of y (same x), or None. `replicate_sets`: resamples
    whose points differ (e.g. the near-optimal runs of each resample of the runs), as (variables, y) pairs."""
    y = np.asarray(y, dtype=float)
    xs = {k: np.asarray(v, dtype=float) for k, v in variables.items()}
    n_params = 1 + len(xs)
    mask = np.isfinite(y) & (y > 0)
    for v in xs.values():
        mask &= np.isfinite(v) & (v > 0)
    if mask.sum() < n_params + 1:
        raise FitError(f"{name}: {int(mask.sum())} usable point(s) (positive, finite), need at least {n_params + 1}")
    y = y[mask]
    if np.ptp(y) == 0:
        raise FitError(f"{name}: every point has the same value ({y[0]:.4g}), likely the edge of the swept grid: "
                       f"widen that axis")
    logs = [np.log(v[mask]) for v in xs.values()]
    if any(np.ptp(lg) == 0 for lg in logs):
        raise FitError(f"{name}: a variable does not vary ({', '.join(xs)}): need at least two distinct values")
    _refuse_collinear(name, list(xs), logs)
    X, ly = np.column_stack([np.ones(len(y)), *logs]), np.log(y)
    coef, *_ = np.linalg.lstsq(X, ly, rcond=None)
    resid = ly - X @ coef
    dof = len(ly) - n_params
    names = ["a", *EXPONENT_NAMES[: len(xs)]]
    diagnostics: dict = {"dof": dof, "residual_sd": float(np.sqrt(resid @ resid / dof)) if dof else None}
    rng = np.random.default_rng(seed)
    draws = None
    if replicates is not None:
        rep = np.asarray(replicates, float)[mask]
        ok = np.all(np.isfinite(rep) & (rep > 0), axis=0)
        rep = np.log(rep[:, ok])
        if rep.shape[1] >= MIN_RESAMPLES:
            draws, diagnostics["lack_of_fit"], method = run_level((np.linalg.pinv(X) @ rep).T, coef, resid, rep, dof)
    if replicate_sets:
        fits = []
        for rv, ry in replicate_sets:
            ry = np.asarray(ry, float)
            lg = [np.log(np.asarray(rv[k], float)) for k in xs]
            if len(ry) > n_params and all(np.ptp(v) > 0 for v in lg) and np.all(ry > 0):
                fits.append(np.linalg.lstsq(np.column_stack([np.ones(len(ry)), *lg]), np.log(ry), rcond=None)[0])
        if len(fits) >= MIN_RESAMPLES:
            draws = np.array(fits)
            method = f"bootstrap of the runs within each group, {len(fits)} resamples"
    if draws is None:
        cov = (resid @ resid / dof) * np.linalg.inv(X.T @ X)
        draws = t_draws(coef, cov, dof, T_DRAWS, rng)
        se = np.sqrt(np.diag(cov))
        method = f"Student-t, {dof} dof"
        interval = {"a": list(np.exp(t_interval(coef[0], se[0], dof, level)))}
        interval.update({n: t_interval(coef[j], se[j], dof, level) for j, n in enumerate(names[1:], start=1)})
    else:
        interval = {"a": percentile_interval(np.exp(draws[:, 0]), level)}
        interval.update({n: percentile_interval(draws[:, j], level) for j, n in enumerate(names[1:], start=1)})
    params = {"a": float(np.exp(coef[0])), **{n: float(c) for n, c in zip(names[1:], coef[1:], strict=True)}}
    with np.errstate(over="ignore"):
        samples = {"a": np.exp(draws[:, 0]), **{n: draws[:, j] for j, n in enumerate(names[1:], start=1)}}
    return LawFit(name=name, kind="power", variables=tuple(xs), params=params,
                  interval={k: [float(v) for v in iv] for k, iv in interval.items()}, r2=r_squared(ly, X @ coef),
                  n_points=len(ly), samples=samples, method=method,
                  fitted_range={k: [float(np.exp(lg.min())), float(np.exp(lg.max()))]
                                for k, lg in zip(xs, logs, strict=True)},
                  diagnostics=diagnostics)
