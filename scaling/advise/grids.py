"""Sweeps built on a previous fit, for sweep/plan.py: an lr or batch axis centred on the fitted optimum at each
cell's budget (`law_centre`), and a wind-tunnel ladder rung's compute-optimal budget (`compute_optimal_budget`).
Both read the fit through fitfile.py and convert between its C and the cell's budget_flops through compute.py,
for the cell's own model, so a grid centred on a fit in another convention trains what that fit recommends.
"""

from __future__ import annotations

import functools
from pathlib import Path

from scaling.advise.compute import budget_flops, law_variables
from scaling.advise.fitfile import FitFile, read_fit
from scaling.config import ConfigError, ModelConfig
from scaling.fit.law import FitError
from scaling.flops import count


def fit_file(path: str, search: list[Path] | None = None) -> FitFile:
    """The fit a sweep names (a ConfigError, naming the file and the fix, when it cannot be read), read once per
    version of the file however many cells centre on it."""
    from scaling.compose import find_file

    p = find_file(path, search) if search is not None else Path(path)
    try:
        stat = p.stat()
        return _read_once(str(p.resolve()), stat.st_mtime_ns, stat.st_size)
    except FileNotFoundError:
        pass
    try:
        return read_fit(p)
    except FitError as e:
        raise ConfigError(str(e)) from None


@functools.lru_cache(maxsize=16)
def _read_once(path: str, mtime_ns: int, size: int) -> FitFile:
    try:
        return read_fit(path)
    except FitError as e:
        raise ConfigError(str(e)) from None


def law_centre(path: str, law_name: str, budget: float, model: ModelConfig,
               search: list[Path] | None = None) -> float:
    """The fitted optimum for a run of `model` trained to `budget` FLOPs: `law_name` is a power law in any of C,
    N and D (lr_opt, a * C^b; lr_opt_n, a * N^b; lr_opt_nd; batch_opt ...), read at the run's own values."""
    fit = fit_file(path, search)
    try:
        law = fit.power_law(law_name, variables=None)
    except FitError as e:
        raise ConfigError(str(e)) from None
    values = law_variables(budget, model, fit.convention)
    return law.value(**{v: values[v] for v in law.variables})


def compute_optimal_budget(model: ModelConfig, path: str, search: list[Path] | None = None) -> float:
    """The budget_flops (3 significant digits) at which `model` is compute-optimal by the fit's allocation law:
    `n_opt` (N = active non-embedding parameters) or `m_opt` (FLOPs per token, Ling's form), both in the fit's
    convention."""
    fit = fit_file(path, search)
    counts = count(model)
    try:
        law, size = fit.power_law("n_opt"), counts.params_active_non_embedding
    except FitError:
        try:
            law, size = fit.power_law("m_opt"), counts.flops_per_token[fit.convention]
        except FitError:
            raise ConfigError(f"law file {fit.path} has no usable 'n_opt' or 'm_opt' law (a * C^b) for a ladder: "
                              f"fit an IsoFLOP sweep with `scaling fit`") from None
    return float(f"{budget_flops(law.inverse(size), model, fit.convention):.3g}")
