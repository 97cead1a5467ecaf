"""Fitted laws: the one place each law's formula is evaluated, predicted with an interval and serialised.

A `LawFit` holds a law's kind (its functional form), the names of its variables, its fitted parameters and
resamples of them (`samples`: run-level bootstrap replicates, or draws from the Student-t distribution of the
estimate; see `uncertainty.py`). Everything that needs a law's value - the recommendation, the held-out and
verification checks, the figures, a sweep that centres its grid on a previous fit - calls `LawFit.predict`; nothing
else re-types a formula, and nothing is ever evaluated from text: `from_dict` maps a stored kind (or, for files
written before kinds existed, an exact formula string) to one of the forms below.

Forms (kind: formula):
- ``power``: ``a * x1^b * x2^c ...`` (``a * C^b``; ``a * N^b * D^c``)
- ``saturating``: ``E + A * C^-alpha``
- ``chinchilla``: ``E + A / N^alpha + B / D^beta``
- ``el_activation``: ``Ahat^alpha`` with Clark et al.'s saturating transform of the activation ratio A
- ``el_granularity``: ``exp(c0 + c1 ln G + c2 (ln G)^2 [+ c3 ln C])``
- ``ling_joint``: ``Ahat^(a + d log C + gamma (log G)^2 + beta log G)`` (log bases in `constants`)
- ``routing``: Clark et al.'s ``10^(a log10 N + b log10 Ehat + c log10 N log10 Ehat + d)`` (E experts, Ehat of E - 1
  saturating between E_start and E_max)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from scaling.fit.uncertainty import percentile_interval

EXPONENT_NAMES = "bcdefg"
SAMPLES_KEPT = 200
"""Resamples of each parameter written to fit.json, so a prediction read back from the file keeps its interval."""


class FitError(ValueError):
    """The data cannot support this law; the message says why (too few points, non-positive values, ...)."""


def saturating_activation(A, A_start: float, A_max: float):
    """Clark et al.'s transform: 1/Ahat = 1/(A + (1/A_start - 1/A_max)^-1) + 1/A_max."""
    shift = 1.0 / (1.0 / A_start - 1.0 / A_max)
    return 1.0 / (1.0 / (np.asarray(A, float) + shift) + 1.0 / A_max)


# ---- the forms -------------------------------------------------------------------------------------------------
def _arr(x):
    """Floats stay Python floats (so a value matches `a * C ** b` to the last bit, as run ids hash it)."""
    return float(x) if isinstance(x, (int, float)) else np.asarray(x, float)


def _power(p, v, variables):
    with np.errstate(over="ignore", invalid="ignore"):  # an extreme resample may overflow (inf, kept as such)
        out = p["a"]
        for var, exp in zip(variables, EXPONENT_NAMES, strict=False):
            try:
                out = out * _arr(v[var]) ** p[exp]
            except OverflowError:  # Python floats raise where numpy gives inf
                out = out * np.float64(v[var]) ** np.float64(p[exp])
        return out


def _saturating(p, v, variables):
    return p["E"] + p["A"] * _arr(v[variables[0]]) ** -p["alpha"]


def _chinchilla(p, v, variables):
    N, D = (np.asarray(v[k], float) for k in variables)
    return p["E"] + p["A"] / N ** p["alpha"] + p["B"] / D ** p["beta"]


def _el_activation(p, v, variables):
    return saturating_activation(v[variables[0]], p["A_start"], p["A_max"]) ** p["alpha"]


def _el_granularity(p, v, variables):
    lg = np.log(np.asarray(v["G"], float))
    out = p["c0"] + p["c1"] * lg + p["c2"] * lg**2
    if "c3" in p:
        out = out + p["c3"] * np.log(np.asarray(v["C"], float))
    return np.exp(out)


def _routing(p, v, variables):
    """Clark et al.'s routed-model law: 10^(a l10 N + b l10 Ehat + c l10 N l10 Ehat + d), Ehat of E - 1 saturating."""
    with np.errstate(over="ignore", invalid="ignore"):  # a resample with E_start > E_max is NaN, dropped as such
        lN = np.log10(np.asarray(v["N"], float))
        lE = np.log10(saturating_activation(np.asarray(v["E"], float) - 1, p["E_start"], p["E_max"]))
        return 10.0 ** (p["a"] * lN + p["b"] * lE + p["c"] * lN * lE + p["d"])


def ling_joint(p, v, variables, constants):
    logG = np.log(np.asarray(v["G"], float)) / math.log(constants.get("log_base_G", 2.0))
    logC = np.log(np.asarray(v["C"], float)) / math.log(constants.get("log_base_C", 10.0))
    exponent = p["a"] + p["d"] * logC + p["gamma"] * logG**2 + p["beta"] * logG
    return saturating_activation(v["A"], p["A_start"], p["A_max"]) ** exponent


def _formula(kind: str, variables: tuple[str, ...], params: dict, constants: dict) -> str:
    if kind == "power":
        return "a * " + " * ".join(f"{v}^{e}" for v, e in zip(variables, EXPONENT_NAMES, strict=False))
    if kind == "saturating":
        return f"E + A * {variables[0]}^-alpha"
    if kind == "chinchilla":
        return f"E + A / {variables[0]}^alpha + B / {variables[1]}^beta"
    if kind == "el_activation":
        return "Ahat^alpha, 1/Ahat = 1/(A + (1/A_start - 1/A_max)^-1) + 1/A_max"
    if kind == "el_granularity":
        return "exp(c0 + c1 ln G + c2 (ln G)^2" + (" + c3 ln C)" if "c3" in params else ")")
    if kind == "routing":
        return ("10^(a log10 N + b log10 Ehat + c log10 N log10 Ehat + d), "
                "1/Ehat = 1/(E - 1 + (1/E_start - 1/E_max)^-1) + 1/E_max")
    if kind == "ling_joint":
        bc, bg = constants.get("log_base_C", 10.0), constants.get("log_base_G", 2.0)
        return f"Ahat^(a + d log{bc:g} C + gamma (log{bg:g} G)^2 + beta log{bg:g} G)"
    raise KeyError(kind)


REQUIRED_PARAMS = {"power": ("a", "b"), "saturating": ("E", "A", "alpha"),
                   "chinchilla": ("E", "A", "B", "alpha", "beta"), "el_activation": ("alpha", "A_start", "A_max"),
                   "el_granularity": ("c0", "c1", "c2"), "ling_joint": ("a", "d", "gamma", "beta", "A_start", "A_max"),
                   "routing": ("a", "b", "c", "d", "E_start", "E_max")}
"""The parameters each form cannot be evaluated without (a law read from a file must have them)."""
LAW_VARIABLES = ("C", "N", "D", "A", "G", "E")
"""The variables any law may be a function of."""

FORMS = {"power": _power, "saturating": _saturating, "chinchilla": _chinchilla, "el_activation": _el_activation,
         "el_granularity": _el_granularity, "ling_joint": ling_joint, "routing": _routing}

LEGACY_FORMULAS = {
    "a * C^b": ("power", ("C",)), "a * D^b": ("power", ("D",)), "a * N^b * D^c": ("power", ("N", "D")),
    "E + A * C^-alpha": ("saturating", ("C",)), "E + A / N^alpha + B / D^beta": ("chinchilla", ("N", "D")),
}
"""Files written before laws carried a kind: exact formula strings (compared, never parsed) to (kind, variables)."""


@dataclass
class Prediction:
    """A law's value at one point, its `level` interval (None when the fit has no resamples) and the point."""

    value: float
    interval: list[float] | None
    at: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"value": self.value, "interval": self.interval, "at": self.at}


@dataclass
class LawFit:
    """A fitted law: its form, parameters, intervals, resamples, goodness of fit, and how far it can be trusted."""

    name: str
    kind: str
    variables: tuple[str, ...]
    params: dict[str, float]
    interval: dict[str, list[float]] = field(default_factory=dict)
    r2: float | None = None
    n_points: int = 0
    notes: list[str] = field(default_factory=list)
    samples: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    """Resamples of each parameter (rows aligned across parameters), for prediction intervals."""
    method: str = ""
    """How the interval was made (e.g. 'run-level bootstrap, 1000 resamples', 'Student-t, 2 dof')."""
    fitted_range: dict[str, list[float]] = field(default_factory=dict)
    """Each variable's [min, max] over the fitted points (for the extrapolation factor)."""
    constants: dict[str, float] = field(default_factory=dict)
    """Fixed settings of the form (e.g. ling_joint's log bases); not fitted."""
    diagnostics: dict = field(default_factory=dict)
    """What the verdict is judged from: degrees of freedom, lack of fit, parameters at bounds, ..."""
    verdict: dict | None = None
    """{"verdict": reliable|weak|undetermined, "reasons": [...], "advice": [...], "judged_at": {...}}."""

    def __post_init__(self):
        if self.kind not in FORMS:
            raise ValueError(f"unknown law kind {self.kind!r}")
        self.variables = tuple(self.variables)

    @property
    def formula(self) -> str:
        return _formula(self.kind, self.variables, self.params, self.constants)

    def evaluate(self, params: dict, **values):
        """The law with `params` (floats, or arrays of resamples) at `values` (floats or broadcastable arrays)."""
        if self.kind == "ling_joint":
            return ling_joint(params, values, self.variables, self.constants)
        return FORMS[self.kind](params, values, self.variables)

    def value(self, **values) -> float:
        return float(self.evaluate(self.params, **values))

    def predict(self, level: float = 0.95, **values) -> Prediction:
        """The law at `values` (e.g. C=3e12) and its `level` interval over the resamples."""
        value = self.value(**values)
        interval = None
        if self.samples:
            preds = np.asarray(self.evaluate(self.samples, **values), float)
            preds = preds[~np.isnan(preds)]  # an overflowed resample (inf) is an extreme on its side: kept
            if len(preds):
                interval = percentile_interval(preds, level)
        return Prediction(value, interval, {k: float(v) for k, v in values.items()})

    def band(self, level: float = 0.95, **grids) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Value, lower and upper bound along 1-D grids of the variables (same length); None without resamples."""
        centre = np.asarray(self.evaluate(self.params, **grids), float)
        if not self.samples:
            return None
        cols = {k: np.asarray(v, float)[None, :] for k, v in grids.items()}
        preds = np.asarray(self.evaluate({k: np.asarray(s)[:, None] for k, s in self.samples.items()}, **cols))
        lo, hi = np.nanpercentile(preds, [50 * (1 - level), 50 * (1 + level)], axis=0)
        return centre, lo, hi

    def inverse(self, y, params: dict | None = None):
        """For a one-variable power law y = a x^b: the x at which the law reaches y (arrays of resamples too)."""
        if self.kind != "power" or len(self.variables) != 1:
            raise FitError(f"{self.name}: only a one-variable power law can be inverted")
        p = params if params is not None else self.params
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):  # a resample with b = 0: inf, kept
            return (np.asarray(y, float) / p["a"]) ** (1.0 / np.asarray(p["b"], float))

    def extrapolation(self, **values) -> float:
        """How far `values` lie beyond the fitted range: the largest ratio value / fitted max (or min / value)."""
        factor = 1.0
        for var, v in values.items():
            if var in self.fitted_range:
                lo, hi = self.fitted_range[var]
                factor = max(factor, v / hi if v > hi else (lo / v if v < lo else 1.0))
        return factor

    def as_dict(self) -> dict:
        out = {"kind": self.kind, "variables": list(self.variables), "formula": self.formula, "params": self.params,
               "interval": self.interval, "r2": self.r2, "n_points": self.n_points, "method": self.method,
               "fitted_range": self.fitted_range}
        for key in ("constants", "diagnostics", "verdict", "notes"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.samples:
            n = len(next(iter(self.samples.values())))
            keep = np.unique(np.linspace(0, n - 1, min(n, SAMPLES_KEPT)).round().astype(int))
            out["samples"] = {k: [float(f"{x:.6g}") for x in np.asarray(v)[keep]] for k, v in self.samples.items()}
        return out

    @classmethod
    def from_dict(cls, name: str, d: dict) -> LawFit:
        """A law read back from fit.json (or a hand-written law file with kind, variables and params)."""
        if not isinstance(d, dict) or not isinstance(d.get("params"), dict):
            raise FitError(f"law {name!r}: no params")
        kind, variables = d.get("kind"), d.get("variables")
        if kind is None and d.get("formula") is None and set(d["params"]) == {"a", "b"}:
            kind, variables = "power", ("C",)  # a hand-written {a, b}: the form every such file has meant
        elif kind is None:
            if d.get("formula") not in LEGACY_FORMULAS:
                raise FitError(f"law {name!r}: no 'kind' and an unknown formula {d.get('formula')!r}")
            kind, variables = LEGACY_FORMULAS[d["formula"]]
        try:
            params = {k: float(v) for k, v in d["params"].items()}
            samples = {k: np.asarray(v, float) for k, v in (d.get("samples") or {}).items()}
        except (TypeError, ValueError):
            raise FitError(f"law {name!r}: parameters must be numbers") from None
        if kind not in FORMS:
            raise FitError(f"law {name!r}: unknown kind {kind!r} (one of {', '.join(FORMS)})")
        if not isinstance(variables, (list, tuple)) or not all(v in LAW_VARIABLES for v in variables):
            raise FitError(f"law {name!r}: variables {variables!r} must be a list of {', '.join(LAW_VARIABLES)}")
        missing = [p for p in REQUIRED_PARAMS[kind] if p not in params]
        if kind == "power":
            missing = [p for p in ["a", *EXPONENT_NAMES[: len(variables)]] if p not in params]
        if missing:
            raise FitError(f"law {name!r}: a {kind} law needs parameter(s) {', '.join(missing)}")
        if not all(math.isfinite(v) for v in params.values()):
            raise FitError(f"law {name!r}: parameters must be finite numbers (got "
                           f"{', '.join(f'{k}={v}' for k, v in params.items() if not math.isfinite(v))})")
        if kind == "power" and not params["a"] > 0:
            raise FitError(f"law {name!r}: a power law's prefactor a must be positive (got a={params['a']:g}): its "
                           f"predictions (an lr, a batch, a size) would not be; refit with `scaling fit`, or fix it")
        _check_predicts_in_range(name, kind, tuple(variables or ()), params, d.get("fitted_range"),
                                 d.get("constants") or {})
        verdict = d.get("verdict")
        if verdict is not None and not (isinstance(verdict, dict) and isinstance(verdict.get("verdict"), str)):
            raise FitError(f"law {name!r}: verdict must be an object with a 'verdict' (reliable, weak or "
                           f"undetermined), not {verdict!r}")
        return cls(name=name, kind=kind, variables=tuple(variables or ()), params=params,
                   interval=d.get("interval") or {}, r2=d.get("r2"), n_points=d.get("n_points") or 0,
                   notes=list(d.get("notes") or []), samples=samples, method=d.get("method") or "",
                   fitted_range=d.get("fitted_range") or {}, constants=d.get("constants") or {},
                   diagnostics=d.get("diagnostics") or {}, verdict=d.get("verdict"))


def _check_predicts_in_range(name: str, kind: str, variables: tuple, params: dict, fitted_range, constants: dict):
    """A law read from a file must predict a positive finite number at the ends of the range it says it was fitted
    on (every quantity a law here predicts is: an lr, a batch, a loss, a size, a leverage); a FitError naming the
    law and the value otherwise (a hand-edited 1e308, a sign flipped)."""
    if not isinstance(fitted_range, dict) or not variables or not all(
            isinstance(fitted_range.get(v), (list, tuple)) and len(fitted_range[v]) == 2 for v in variables):
        return
    try:
        ends = [{v: float(fitted_range[v][i]) for v in variables} for i in (0, 1)]
    except (TypeError, ValueError):
        raise FitError(f"law {name!r}: fitted_range must hold [low, high] numbers per variable") from None
    probe = LawFit(name=name, kind=kind, variables=variables, params=params, constants=constants)
    for at in ends:
        try:
            value = probe.value(**at)
        except (ArithmeticError, ValueError, KeyError):
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            where = ", ".join(f"{k}={v:.3g}" for k, v in at.items())
            raise FitError(f"law {name!r} predicts {value:.4g} at {where} (its fitted range): not a positive finite "
                           f"number; its parameters are wrong: refit with `scaling fit`, or fix the file")


def laws_from_json(payload: dict) -> dict[str, LawFit]:
    """Every law of a `scaling fit --json` object (its "laws" mapping)."""
    laws = payload.get("laws") if isinstance(payload, dict) else None
    if not isinstance(laws, dict):
        raise FitError("not a `scaling fit --json` output (no 'laws')")
    return {name: LawFit.from_dict(name, d) for name, d in laws.items()}
