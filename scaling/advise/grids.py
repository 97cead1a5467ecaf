"""Sweeps built on a previous fit, for sweep/plan.py: an lr or batch axis centred on the fitted optimum at each
cell's budget (`law_centre`), and a wind-tunnel ladder rung's compute-optimal budget (`compute_optimal_budget`).
Both read the fit through fitfile.py and convert between its C and the cell's budget_flops through compute.py,
for the cell's own model, so a grid centred on a fit in another convention trains what that fit recommends.
"""

from __future__ import annotations

import functools
import math
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
               search: list[Path] | None = None, allow_undetermined: bool = False, axis: str = "lr") -> float:
    """The fitted optimum for a run of `model` trained to `budget` FLOPs: `law_name` is a power law in any of C,
    N and D (lr_opt, a * C^b; lr_opt_n, a * N^b; lr_opt_nd; batch_opt ...), read at the run's own values. A law its
    fit judged undetermined is refused unless `allow_undetermined` (`axis`.allow_undetermined)."""
    fit = fit_file(path, search)
    try:
        law = fit.power_law(law_name, variables=None)
    except FitError as e:
        raise ConfigError(str(e)) from None
    verdict = law.verdict if isinstance(law.verdict, dict) else {}
    if verdict.get("verdict") == "undetermined" and not allow_undetermined:
        reasons = verdict.get("reasons") or ["no reason recorded"]
        raise ConfigError(f"{axis}: law {law_name!r} of {fit.path} is undetermined ({reasons[0]}), so its prediction "
                          f"is not a value to centre a grid on: give {axis}.values or {axis}.centre, or set "
                          f"{axis}.allow_undetermined=true to centre on it anyway")
    values = law_variables(budget, model, fit.convention)
    centre = law.value(**{v: values[v] for v in law.variables})
    if not (math.isfinite(centre) and centre > 0):
        raise ConfigError(f"{axis}: law {law_name!r} of {fit.path} gives {centre:g} for a run of {budget:g} FLOPs, not "
                          f"a positive number to centre a grid on: check its parameters ({law.params}), or refit it")
    return centre


def centre_lines(axes: dict, search: list[Path] | None = None) -> list[str]:
    """One line per law-centred axis ({"lr": GridAxis, ...}): the law, its file, its verdict and its FLOPs
    convention, for a sweep's dry run (what the grid rests on)."""
    lines = []
    for name, axis in axes.items():
        if axis.values or not axis.law:
            continue
        law_name = axis.law_name or ("lr_opt" if name == "lr" else "batch_opt")
        fit = fit_file(axis.law, search)
        law = fit.laws.get(law_name)
        verdict = (law.verdict or {}).get("verdict") if law is not None and isinstance(law.verdict, dict) else None
        judged = f"judged {verdict}" if verdict else "not judged (a published or hand-written law)"
        allowed = ", centred on anyway (allow_undetermined)" if verdict == "undetermined" else ""
        formula = f" ({law.formula})" if law is not None else ""
        lines.append(f"{name} centred on {law_name}{formula} of {fit.path}: {judged}{allowed}; C in its "
                     f"{fit.convention} convention, x{', x'.join(f'{f:g}' for f in axis.factors)}")
    return lines


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
