"""How intervals are made (ARCHITECTURE section 8), in one place.

Two sources of uncertainty, used in this order of preference:

1. **Run-level resamples.** When each fitted point is itself estimated from runs (a budget's optimal lr is the
   vertex of a bowl fitted to its runs; its best loss is the bowl's minimum), the runs are resampled (a residual
   bootstrap of each bowl, `optima.py`), every point is re-estimated, and the law is refitted per resample. The
   interval then carries the runs' noise, whatever the number of points. When the law has degrees of freedom left
   (n - p >= 1), the scatter of the points about the law is compared with what that noise explains (a chi-square
   test of lack of fit); every resample's deviation from the estimate is widened by the Birge ratio
   max(1, sqrt(chi2 / dof)), and when the scatter is significant (p < LACK_OF_FIT_P) the verdict says so.
2. **Student-t.** When the points are all there is (a CSV of published optima, IsoFLOP vertices), the interval of a
   least-squares fit uses the residual variance with n - p degrees of freedom: parameters are drawn from the
   multivariate t distribution of the estimate (linearised for nonlinear laws). With n = p there is no interval.
"""

from __future__ import annotations

import zlib

import numpy as np


def stream(seed: int, *names: str) -> int:
    """The seed of an independent random stream for one family, law or resampling, keyed by its names: fits that
    are independent must not share their random numbers (two families drawn with one seed would correlate their
    exponents exactly, and a leverage interval from the pair would come out several times too narrow). Keyed by name
    rather than by order, so adding a family leaves the others' draws unchanged."""
    key = [zlib.crc32(str(n).encode()) for n in names]
    return int(np.random.SeedSequence([int(seed), *key]).generate_state(2, np.uint64)[0] >> np.uint64(1))


LACK_OF_FIT_P = 0.05
"""The scatter about a law is 'more than the runs' noise explains' below this p-value of the chi-square test."""


def percentile_interval(samples, level: float = 0.95) -> list[float]:
    lo, hi = np.nanpercentile(np.asarray(samples, float), [50 * (1 - level), 50 * (1 + level)])
    return [float(lo), float(hi)]


def t_draws(theta: np.ndarray, cov: np.ndarray, dof: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """n draws (rows) from the multivariate Student-t with `dof` degrees of freedom around `theta`."""
    theta = np.asarray(theta, float)
    w, V = np.linalg.eigh((cov + cov.T) / 2)
    L = V * np.sqrt(np.clip(w, 0, None))
    z = rng.standard_normal((n, len(theta))) @ L.T
    scale = np.sqrt(rng.chisquare(dof, size=(n, 1)) / dof)
    return theta + z / scale


RANK_TOLERANCE = 1e-7
"""A direction of the parameters whose singular value (of the column-scaled Jacobian) is below this fraction of the
largest is one the data cannot see."""


def undetermined(J: np.ndarray, names: list[str]) -> list[str]:
    """The parameters the data cannot determine: those that load (|v| > 0.1) on a direction of the column-scaled
    Jacobian J (points x parameters) whose singular value is below RANK_TOLERANCE of the largest. A pseudo-inverse
    would give them a zero-width interval (or, nearly singular, explosive draws); they must be declared instead."""
    J = np.asarray(J, float)
    scale = np.linalg.norm(J, axis=0)
    dead = [n for n, c in zip(names, scale, strict=True) if not c > 0]
    Js = J / np.where(scale > 0, scale, 1.0)
    _, s, Vt = np.linalg.svd(Js, full_matrices=True)
    s = np.concatenate([s, np.zeros(Vt.shape[0] - len(s))])
    null = Vt[s < RANK_TOLERANCE * s.max()] if s.max() > 0 else Vt
    seen = {n for row in null for n, v in zip(names, row, strict=True) if abs(v) > 0.1}
    return [n for n in names if n in seen or n in dead]


def t_interval(value: float, se: float, dof: int, level: float = 0.95) -> list[float]:
    from scipy.stats import t

    q = float(t.ppf(0.5 + level / 2, dof))
    return [float(value - q * se), float(value + q * se)]


def lack_of_fit(residuals: np.ndarray, variances: np.ndarray, dof: int) -> dict:
    """Chi-square of the residuals about a law against the points' own (resampled) variances.

    Returns {"chi2", "dof", "p", "birge"}: birge = max(1, sqrt(chi2 / dof)), the factor the intervals are widened by
    (the Particle Data Group's scale factor): smooth in the scatter, so one more point of misfit widens a little,
    never from x1 straight to x2 as a switch at p < 0.05 did with one degree of freedom. The p-value (chi-square
    test) decides only whether the verdict calls the scatter 'in excess' (LACK_OF_FIT_P)."""
    from scipy.stats import chi2 as chi2_dist

    variances = np.maximum(np.asarray(variances, float), 1e-300)
    chi2 = float(np.sum(np.asarray(residuals, float) ** 2 / variances))
    if dof < 1:
        return {"chi2": chi2, "dof": dof, "p": None, "birge": 1.0}
    p = float(chi2_dist.sf(chi2, dof))
    return {"chi2": chi2, "dof": dof, "p": p, "birge": max(1.0, float(np.sqrt(chi2 / dof)))}


def widen(samples: np.ndarray, centre: np.ndarray, factor: float) -> np.ndarray:
    """Resamples (rows) with their deviation from `centre` multiplied by `factor`."""
    return centre + factor * (np.asarray(samples, float) - centre)


MIN_RESAMPLES = 20
"""Fewer usable run-level resamples than this and a fit falls back to its points alone (Student-t)."""


def run_level(draws: np.ndarray, centre: np.ndarray, residuals: np.ndarray, point_resamples: np.ndarray,
              dof: int) -> tuple[np.ndarray, dict, str]:
    """A law's refits over run-level resamples, widened for lack of fit: (draws, the test, a description).

    `point_resamples`: (n points, R) resamples of the fitted points, on the scale of the residuals."""
    lof = lack_of_fit(residuals, point_resamples.var(axis=1, ddof=1), dof)
    method = f"run-level bootstrap, {point_resamples.shape[1]} resamples"
    if lof["birge"] > 1:
        method += f", widened x{lof['birge']:.3g} (scatter about the law beyond the runs' noise)"
    return widen(draws, centre, lof["birge"]), lof, method


def prediction_interval(value: float, interval: list[float] | None, measured: float,
                        measured_interval: list[float] | None, log: bool) -> list[float] | None:
    """Where a new *measurement* of a predicted quantity should fall: the law's interval (the mean law's
    uncertainty) widened, side by side, by the measurement's own (its noise: a measured optimum is itself read from
    noisy runs), the half-widths adding in quadrature (in log units when `log`). None without the law's interval."""
    if interval is None or not np.all(np.isfinite(interval)):
        return None
    f = np.log if log else (lambda x: x)
    v, lo, hi = f(value), f(interval[0]), f(interval[1])
    m_lo = m_hi = 0.0
    if measured_interval is not None and np.all(np.isfinite(measured_interval)):
        m_lo = max(0.0, f(measured) - f(measured_interval[0]))
        m_hi = max(0.0, f(measured_interval[1]) - f(measured))
    bounds = [v - float(np.hypot(v - lo, m_hi)), v + float(np.hypot(hi - v, m_lo))]
    return [float(np.exp(b)) for b in bounds] if log else bounds
