"""Power laws fitted in log space, with bootstrap intervals and R^2 (ARCHITECTURE section 8).

`fit_power_law(variables, y)` fits ``y = a * prod_i x_i^b_i`` by ordinary least squares of ln y on the ln x_i
(one variable: ``a * C^b``; two: ``a * N^b * D^c``). Intervals are percentile intervals over bootstrap resamples of
the points. Formulas are fixed strings naming the parameters; nothing is evaluated from text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

EXPONENT_NAMES = "bcdefg"


class FitError(ValueError):
    """The data cannot support this law; the message says why (too few points, non-positive values, ...)."""


@dataclass
class LawFit:
    """A fitted law: its formula, parameters, bootstrap intervals, goodness of fit and how many points it used."""

    name: str
    formula: str
    params: dict[str, float]
    interval: dict[str, list[float]] = field(default_factory=dict)
    r2: float | None = None
    n_points: int = 0
    notes: list[str] = field(default_factory=list)
    samples: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    """Bootstrap samples of each parameter (for prediction intervals); not serialised."""

    def predict(self, fn, level: float = 0.95) -> tuple[float, list[float] | None]:
        """fn(params) at the fit, and its `level` interval over the bootstrap samples (None without samples)."""
        value = float(fn(self.params))
        if not self.samples:
            return value, None
        n = len(next(iter(self.samples.values())))
        preds = np.array([fn({k: v[i] for k, v in self.samples.items()}) for i in range(n)], float)
        preds = preds[np.isfinite(preds)]
        return value, (percentile_interval(preds, level) if len(preds) else None)

    def as_dict(self) -> dict:
        return {"formula": self.formula, "params": self.params, "interval": self.interval, "r2": self.r2,
                "n_points": self.n_points, **({"notes": self.notes} if self.notes else {})}


def _design(logs: list[np.ndarray]) -> np.ndarray:
    return np.column_stack([np.ones(len(logs[0])), *logs])


def _ols(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    return coef


def r_squared(y: np.ndarray, y_hat: np.ndarray) -> float:
    ss_res = float(np.sum((y - y_hat) ** 2))
    ss_tot = float(np.sum((y - np.mean(y)) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> list[float]:
    lo, hi = np.nanpercentile(samples, [50 * (1 - level), 50 * (1 + level)])
    return [float(lo), float(hi)]


def fit_power_law(name: str, variables: dict[str, np.ndarray], y: np.ndarray, n_boot: int = 1000,
                  seed: int = 0, level: float = 0.95) -> LawFit:
    """Fit y = a * x1^b * x2^c ... (variables in order) by OLS in log space; bootstrap `level` intervals."""
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
    X, ly = _design(logs), np.log(y)
    coef = _ols(X, ly)
    names = ["a", *EXPONENT_NAMES[: len(xs)]]
    params = {"a": float(np.exp(coef[0])), **{n: float(c) for n, c in zip(names[1:], coef[1:], strict=True)}}
    rng = np.random.default_rng(seed)
    boots = np.empty((n_boot, len(coef)))
    for i in range(n_boot):
        idx = rng.integers(0, len(ly), len(ly))
        boots[i] = _ols(X[idx], ly[idx]) if np.all([np.ptp(lg[idx]) > 0 for lg in logs]) else np.nan
    interval = {"a": percentile_interval(np.exp(boots[:, 0]), level)}
    interval.update({n: percentile_interval(boots[:, j + 1], level) for j, n in enumerate(names[1:])})
    formula = "a * " + " * ".join(f"{v}^{n}" for v, n in zip(xs, names[1:], strict=True))
    ok = np.all(np.isfinite(boots), axis=1)
    samples = {"a": np.exp(boots[ok, 0]), **{n: boots[ok, j + 1] for j, n in enumerate(names[1:])}}
    return LawFit(name=name, formula=formula, params=params, interval=interval, r2=r_squared(ly, X @ coef),
                  n_points=len(ly), samples=samples)


def predict_power_law(fit: LawFit, **values: float) -> float:
    """Evaluate a fitted a * x^b * ... at the given variable values (names as in the formula)."""
    variables = [term.split("^")[0].strip() for term in fit.formula.split("*")[1:]]
    exponents = [p for p in fit.params if p != "a"]
    out = fit.params["a"]
    for var, exp in zip(variables, exponents, strict=True):
        out *= values[var] ** fit.params[exp]
    return out
