"""Every law the runs can support, fitted in one pass; the ones they cannot are listed with the reason.

`fit_all(runs)` returns a FitReport whose `as_json()` is the machine-readable object of `scaling fit --json`:
``{"laws": {NAME: {"formula", "params", "interval", "r2", "n_points"}}, "excluded": {...}, ...}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from scaling.fit import leverage as lev
from scaling.fit.inputs import Runs
from scaling.fit.loss_laws import fit_chinchilla, fit_isoflop_laws, fit_loss_vs_compute
from scaling.fit.optima import optimum_points, parse_method
from scaling.fit.powerlaw import FitError, LawFit, fit_power_law

GROUP_COLS = ["params", "tokens"]
"""A hyperparameter group: runs of one model size and token count (one budget of one shape)."""


@dataclass
class FitReport:
    laws: dict[str, LawFit] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)
    """Law name -> why the data cannot support it."""
    runs_excluded: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    optima: pd.DataFrame | None = None
    leverage: pd.DataFrame | None = None
    n_runs: int = 0
    source: str = ""
    optimum_method: str = "quadratic"
    held_out: dict | None = None
    """Refit without the largest budget: predicted against achieved optimum lr, batch and loss there."""

    def as_json(self) -> dict:
        return {
            "source": self.source, "n_runs": self.n_runs, "optimum": self.optimum_method,
            "laws": {name: fit.as_dict() for name, fit in self.laws.items()},
            "excluded": {"laws": self.excluded, "runs": self.runs_excluded},
            "held_out": self.held_out,
            "notes": self.notes,
        }


def _attempt(report: FitReport, name: str, fn, only: tuple[str, ...] | None = None) -> None:
    if only is not None and name not in only:
        return
    try:
        fit = fn()
    except FitError as e:
        report.excluded[name] = str(e)
        return
    fit.name = name
    report.laws[name] = fit


def main_family(df: pd.DataFrame) -> str:
    """The family with the most runs: the one the hyperparameter and loss laws describe."""
    return str(df["family"].value_counts().idxmax())


def held_out_check(runs: Runs, optimum: str = "quadratic", n_boot: int = 100, seed: int = 0) -> dict | None:
    """Fit without the largest budget of the main family; predict lr, batch and loss there; compare with what the
    runs at that budget achieved (their optimum by the same method, and their best loss). None when fewer than 4
    budgets."""
    df = runs.df
    fam = df[df["family"] == main_family(df)]
    budgets = sorted(fam["budget"].unique())
    if len(budgets) < 4:
        return None
    top = budgets[-1]
    rest = Runs(df=df[df["budget"] < top].reset_index(drop=True), source=runs.source)
    report = fit_all(rest, optimum, n_boot=n_boot, seed=seed, check=False, only=HELD_OUT_LAWS)
    at_top = fam[fam["budget"] == top]
    out: dict = {"budget": float(top)}
    achieved = {"loss": float(at_top["loss"].min())}
    if report.optima is not None and "lr" in at_top and at_top["lr"].nunique() >= 3:
        pts = optimum_points(at_top, GROUP_COLS, optimum)
        achieved["lr"] = float(np.exp(np.log(pts["lr"]).mean()))
        achieved["batch_tokens"] = float(np.exp(np.log(pts["batch_tokens"]).mean()))
    predictions = {"lr": ("lr_opt", lambda p: p["a"] * top ** p["b"]),
                   "batch_tokens": ("batch_opt", lambda p: p["a"] * top ** p["b"]),
                   "loss": ("loss_vs_compute", lambda p: p["E"] + p["A"] * top ** -p["alpha"])}
    for item, (law, fn) in predictions.items():
        if law in report.laws and item in achieved:
            predicted, interval = report.laws[law].predict(fn)
            out[item] = {"predicted": predicted, "interval": interval, "achieved": achieved[item],
                         "relative_error": predicted / achieved[item] - 1}
    return out if len(out) > 1 else None


HELD_OUT_LAWS = ("lr_opt", "batch_opt", "loss_vs_compute")


def fit_all(runs: Runs, optimum: str = "quadratic", n_boot: int = 1000, seed: int = 0,
            check: bool = True, only: tuple[str, ...] | None = None) -> FitReport:
    """Every law the runs support (or those in `only`); with `check`, also the held-out check on the largest
    budget."""
    parse_method(optimum)  # a bad --optimum fails before any fitting

    def attempt(name, fn):
        _attempt(report, name, fn, only)

    df = runs.df
    report = FitReport(runs_excluded=dict(runs.excluded), notes=list(runs.notes), n_runs=len(df), source=runs.source,
                       optimum_method=optimum)
    family = main_family(df)
    fam = df[df["family"] == family]
    if df["family"].nunique() > 1:
        report.notes.append(f"hyperparameter and loss laws use family {family!r} ({len(fam)} of {len(df)} runs)")

    # hyperparameter laws
    has_lr = "lr" in fam.columns and fam["lr"].notna().all()
    has_batch = "batch_tokens" in fam.columns and fam["batch_tokens"].notna().all()
    if has_lr and fam["lr"].nunique() >= 3:
        if not has_batch:
            fam = fam.assign(batch_tokens=1.0)
        points = optimum_points(fam, GROUP_COLS, optimum)
        report.optima = points
        kw = {"n_boot": n_boot, "seed": seed}
        attempt("lr_opt", lambda: fit_power_law("lr_opt", {"C": _flops(points, fam)}, points["lr"], **kw))
        attempt("lr_opt_nd", lambda: fit_power_law("lr_opt_nd", {"N": points["params"],
                                                                           "D": points["tokens"]}, points["lr"], **kw))
        if has_batch and fam["batch_tokens"].nunique() >= 2:
            attempt("batch_opt", lambda: fit_power_law("batch_opt", {"C": _flops(points, fam)},
                                                                points["batch_tokens"], **kw))
            attempt("batch_opt_d", lambda: fit_power_law("batch_opt_d", {"D": points["tokens"]},
                                                                  points["batch_tokens"], **kw))
        else:
            for name in ("batch_opt", "batch_opt_d"):
                report.excluded[name] = "the batch size does not vary (need at least 2 batch values)"
    else:
        for name in ("lr_opt", "lr_opt_nd", "batch_opt", "batch_opt_d"):
            report.excluded[name] = "need runs at >= 3 learning rates (an lr column)"

    # loss laws
    best_per_budget = fam.groupby("budget")["loss"].min()
    attempt("loss_vs_compute", lambda: fit_loss_vs_compute(best_per_budget.index.to_numpy(float),
                                                                    best_per_budget.to_numpy(float),
                                                                    n_boot=min(n_boot, 200), seed=seed))
    best_nd = fam.groupby(["params", "tokens"])["loss"].min().reset_index()
    attempt("chinchilla", lambda: fit_chinchilla(best_nd["params"], best_nd["tokens"], best_nd["loss"]))
    iso = fam.groupby(["budget", "params"]).agg(loss=("loss", "min"), tokens=("tokens", "median")).reset_index()

    def isoflop():
        n_fit, d_fit, _ = fit_isoflop_laws(iso, n_boot=n_boot)
        report.laws["d_opt"] = d_fit
        return n_fit

    attempt("n_opt", isoflop)
    if "n_opt" in report.excluded:
        report.excluded["d_opt"] = report.excluded["n_opt"]

    # MoE leverage
    if only is not None and "leverage" not in only:
        return _with_check(report, runs, optimum, n_boot, seed, check)
    if "dense" in set(df["family"]) and "activation_ratio" in df.columns:
        try:
            curves = lev.family_curves(lev.matched_hyperparameters(df))  # fitted once, used twice below
            table = lev.leverage_table(df, curves=curves)
            report.leverage = table
            if table.empty:
                raise FitError("no MoE family with runs at >= 2 budgets beside the dense baseline")
            attempt("leverage", lambda: lev.fit_el_vs_activation(
                table.groupby("activation_ratio", as_index=False)["el"].mean(), n_boot=min(n_boot, 200), seed=seed))

            def granularity():
                fit, best = lev.fit_el_vs_granularity(table)
                report.notes.append(f"EL peaks at granularity G = {best:.3g} (leverage_granularity)")
                return fit

            attempt("leverage_granularity", granularity)
            top = table[table["budget"] == table["budget"].max()]
            best_family = str(top.loc[top["el"].idxmax(), "family"])
            attempt("leverage_compute", lambda: lev.el_vs_compute(curves, best_family))
            attempt("ling_joint", lambda: lev.fit_ling_joint(table))
        except FitError as e:
            report.excluded["leverage"] = str(e)
    else:
        report.excluded["leverage"] = "no dense baseline runs (family 'dense') to measure leverage against"
    return _with_check(report, runs, optimum, n_boot, seed, check)


def _with_check(report: FitReport, runs: Runs, optimum: str, n_boot: int, seed: int, check: bool) -> FitReport:
    if check:
        report.held_out = held_out_check(runs, optimum, n_boot=min(n_boot, 100), seed=seed)
    return report


def _flops(points: pd.DataFrame, fam: pd.DataFrame) -> np.ndarray:
    """The budget of each optimum point's (params, tokens) group."""
    budgets = fam.groupby(GROUP_COLS)["budget"].first()
    return np.array([budgets[(p, t)] for p, t in zip(points["params"], points["tokens"], strict=True)], float)
