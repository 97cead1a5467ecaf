"""Every law the runs can support, fitted in one pass, each with its verdict; the ones they cannot are listed with
the reason.

`fit_all(runs)` returns a FitReport whose `as_json()` is the machine-readable object of `scaling fit --json`:
``{"laws": {NAME: {"kind", "formula", "params", "interval", "verdict", ...}}, "optima": [...], "leverage": [...],
"excluded": {...}, ...}``. Compute C is the runs' FLOPs under the chosen convention (`inputs.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from scaling.fit import leverage as lev
from scaling.fit.inputs import Runs
from scaling.fit.law import FitError, LawFit
from scaling.fit.loss_laws import fit_chinchilla, fit_isoflop_laws, fit_loss_vs_compute, isoflop_optima
from scaling.fit.optima import Optima, budget_optima, group_columns, has_lr_grid, lr_grid_optima, parse_method
from scaling.fit.powerlaw import fit_power_law
from scaling.fit.routing import fit_routing_law
from scaling.fit.uncertainty import MIN_RESAMPLES, percentile_interval, prediction_interval, stream
from scaling.fit.verdict import el_verdict, judge

HELD_OUT_LAWS = ("lr_opt", "batch_opt", "loss_vs_compute", "n_opt")


def json_safe(obj):
    """The object with every NaN / inf float as None and numpy scalars as Python ones (fit.json stays valid JSON)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


@dataclass
class FitReport:
    laws: dict[str, LawFit] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)
    """Law name -> why the data cannot support it."""
    runs_excluded: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    optima: pd.DataFrame | None = None
    """One row per hyperparameter group of the main family: its optimum lr, batch and loss, their 95% intervals,
    and the diagnostics the verdicts use (interior bowl, grid edge, noise, seeds)."""
    leverage: pd.DataFrame | None = None
    n_runs: int = 0
    source: str = ""
    optimum_method: str = "quadratic"
    family: str = ""
    """The family (MoE configuration) the hyperparameter and loss laws describe."""
    convention: str = "M"
    """The FLOPs convention of every C."""
    target_flops: float | None = None
    held_out: dict | None = None
    """Refit without the largest budget: predicted against achieved optimum lr, batch and loss there."""
    structure: dict | None = None
    """Whether the optima depend on the MoE structure (d ln lr* / d ln A, d ln lr* / d ln G), with intervals."""
    precision: pd.DataFrame | None = None
    """The FP8 loss gap per configuration (fit/precision_gap.py): mean with its interval, verdict, law."""
    precision_pairs: pd.DataFrame | None = None
    """The FP8 / base run pairs behind it."""

    def as_json(self) -> dict:
        def records(df):
            return None if df is None else df.to_dict(orient="records")

        return json_safe({
            "source": self.source, "n_runs": self.n_runs, "optimum": self.optimum_method, "family": self.family,
            "convention": self.convention, "target_flops": self.target_flops,
            "laws": {name: fit.as_dict() for name, fit in self.laws.items()},
            "optima": records(self.optima), "leverage": records(self.leverage), "structure": self.structure,
            "precision": records(self.precision), "precision_pairs": records(self.precision_pairs),
            "excluded": {"laws": self.excluded, "runs": self.runs_excluded},
            "held_out": self.held_out,
            "notes": self.notes,
        })


def main_family(df: pd.DataFrame) -> str:
    """The family with the most runs: the one the hyperparameter and loss laws describe."""
    return str(df["family"].value_counts().idxmax())


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


def _hyperparameter_laws(report: FitReport, opt: Optima, n_boot: int, seed: int, attempt) -> None:
    g = opt.groups
    if opt.method == "quadratic":
        def law(name, variables, col):
            return fit_power_law(name, {v: g[c] for v, c in variables.items()}, g[col],
                                 replicates=opt.replicates.get(col), n_boot=n_boot, seed=stream(seed, name))
    else:  # near-optimal: every near-optimal run is a point (its own FLOPs as C), resampled with the runs
        def law(name, variables, col):
            cols = {v: ("flops" if c == "C" else c) for v, c in variables.items()}
            sets = [({v: s[c] for v, c in cols.items()}, s[col]) for s in opt.replicate_sets]
            return fit_power_law(name, {v: opt.points[c] for v, c in cols.items()}, opt.points[col],
                                 replicate_sets=sets, n_boot=n_boot, seed=stream(seed, name))
    attempt("lr_opt", lambda: law("lr_opt", {"C": "C"}, "lr"))
    attempt("lr_opt_nd", lambda: law("lr_opt_nd", {"N": "params", "D": "tokens"}, "lr"))
    attempt("lr_opt_n", lambda: law("lr_opt_n", {"N": "params"}, "lr"))
    if opt.points["batch_tokens"].nunique() >= 2:
        attempt("batch_opt", lambda: law("batch_opt", {"C": "C"}, "batch_tokens"))
        attempt("batch_opt_d", lambda: law("batch_opt_d", {"D": "tokens"}, "batch_tokens"))
    else:
        for name in ("batch_opt", "batch_opt_d"):
            report.excluded[name] = "the batch size does not vary (need at least 2 batch values)"


def _symmetric_bowls(report: FitReport, fam: pd.DataFrame, opt: Optima) -> None:
    """The lr laws again through symmetric parabolas, where the optima came from asymmetric bowls: the alternative
    form of the bowl, kept in the law's diagnostics ("forms") for the verdict to compare at the judged point."""
    if opt.method != "quadratic" or "bowl" not in opt.groups.columns or not (opt.groups["bowl"] == "asymmetric").any():
        return
    sym = budget_optima(fam, "quadratic", n_boot=0, asymmetric=False).groups
    for name, variables in (("lr_opt", {"C": "C"}), ("lr_opt_nd", {"N": "params", "D": "tokens"}),
                            ("lr_opt_n", {"N": "params"})):
        if name not in report.laws:
            continue
        try:
            alt = fit_power_law(name, {v: sym[c] for v, c in variables.items()}, sym["lr"], n_boot=0)
        except FitError:
            continue
        report.laws[name].diagnostics.setdefault("forms", {})["symmetric lr bowls"] = {
            "kind": alt.kind, "variables": list(alt.variables), "params": alt.params}


def _what_moved(report: FitReport, fam: pd.DataFrame) -> None:
    """For each law of C fitted to the main family: the span of N and of D behind its C. A law of C claims both;
    when one of them never moved, it was measured at that N (or D) alone."""
    spans = {"N": [float(fam["params"].min()), float(fam["params"].max())],
             "D": [float(fam["tokens"].min()), float(fam["tokens"].max())]}
    for name in ("lr_opt", "batch_opt", "loss_vs_compute"):
        if name in report.laws:
            report.laws[name].diagnostics["moved"] = spans


def _isoflop_table(fam: pd.DataFrame) -> pd.DataFrame:
    """One row per (budget, model size): its best loss, tokens and FLOPs, what the IsoFLOP laws are fitted to."""
    return fam.groupby(["budget", "params"]).agg(loss=("loss", "min"), tokens=("tokens", "median"),
                                                 flops=("flops", "median")).reset_index()


LOSS_POINTS_TUNED = "each budget's lr bowl minimum"
LOSS_POINTS_AT_LR = "each budget's best configuration, mean over its seeds, at the lr it was trained at"
"""How loss_vs_compute's points were read (its diagnostics' "points"): a measurement to check it against is read
the same way (advise/verify.py)."""


def _budget_losses(fam: pd.DataFrame, opt: Optima | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, str]:
    """(C, best loss, resamples or None, how they were read: LOSS_POINTS_*) per budget: the bowl minima of an lr
    sweep, else the best configuration's mean over its seeds."""
    if opt is not None and opt.method == "quadratic":
        best, reps = opt.per_budget()
        return best["C"].to_numpy(float), best["loss"].to_numpy(float), reps, LOSS_POINTS_TUNED
    # without an lr grid: each configuration's mean over its seeds (the best single seed would read the noise as
    # progress), and the best configuration of each budget
    config = [c for c in [*group_columns(fam), "lr", "batch_tokens"] if c in fam.columns]
    means = fam.groupby(["budget", *config], dropna=False).agg(loss=("loss", "mean"), C=("flops", "median"))
    best = means.reset_index().loc[lambda t: t.groupby("budget")["loss"].idxmin()]
    return best["C"].to_numpy(float), best["loss"].to_numpy(float), None, LOSS_POINTS_AT_LR


def fit_all(runs: Runs, optimum: str = "quadratic", n_boot: int = 1000, seed: int = 0, check: bool = True,
            only: tuple[str, ...] | None = None, target_flops: float | None = None,
            progress=None) -> FitReport:
    """Every law the runs support (or those in `only`), each judged at `target_flops` (default 3x the largest
    budget); with `check`, also the held-out check on the largest budget. `progress(stage)` is told each stage as
    it starts (a fit of 1,000 resamples over many families takes minutes)."""
    say = progress or (lambda stage: None)
    parse_method(optimum)  # a bad --optimum fails before any fitting
    if target_flops is not None and not target_flops > 0:
        raise ValueError(f"--target-flops {target_flops} must be a positive number of FLOPs")
    if n_boot < 0:
        raise ValueError(f"--bootstrap {n_boot} must be >= 0 (0: intervals from the points alone)")

    def attempt(name, fn):
        _attempt(report, name, fn, only)

    df = runs.df
    family = main_family(df)
    report = FitReport(runs_excluded=dict(runs.excluded), notes=list(runs.notes), n_runs=len(df), source=runs.source,
                       optimum_method=optimum, family=family, target_flops=target_flops, convention=runs.convention)
    fam = df[df["family"] == family]
    if df["family"].nunique() > 1:
        report.notes.append(f"hyperparameter and loss laws use family {family!r} ({len(fam)} of {len(df)} runs)")

    # hyperparameter laws
    opt = None
    families = df["family"].nunique()
    say(f"lr bowls of {families} famil{'y' if families == 1 else 'ies'}, {n_boot} run-level resamples")
    grids = lr_grid_optima(df, n_boot, seed)  # every family's bowls, resampled once
    if has_lr_grid(fam):
        opt = grids.get(family) if optimum == "quadratic" else None
        opt = opt or budget_optima(fam, optimum, n_boot, stream(seed, "optima", family))
        report.optima = opt.groups
        _hyperparameter_laws(report, opt, n_boot, seed, attempt)
        _symmetric_bowls(report, fam, opt)
        if "curvature_ratio" in opt.groups.columns and opt.groups["curvature_ratio"].notna().any():
            ratio = float(opt.groups["curvature_ratio"].dropna().iloc[0])
            report.notes.append(f"lr bowls: asymmetric, loss curving {ratio:.3g}x as fast above lr* as below it "
                                f"(one ratio for the family's budgets, fitted with their vertices)")
    else:
        for name in ("lr_opt", "lr_opt_nd", "lr_opt_n", "batch_opt", "batch_opt_d"):
            report.excluded[name] = ("need each configuration (size, tokens) trained at >= 3 learning rates: an lr "
                                     "bowl to read the optimum from (the runs' own lr is not an optimum)")

    # loss laws
    say("loss and allocation laws")
    C, L, R, read_as = _budget_losses(fam, opt)

    def loss_vs_compute():
        law = fit_loss_vs_compute(C, L, n_boot=n_boot, seed=stream(seed, "loss_vs_compute"), replicates=R)
        law.diagnostics["points"] = {"C": [float(c) for c in C], "loss": [float(x) for x in L], "read_as": read_as}
        return law

    attempt("loss_vs_compute", loss_vs_compute)
    best_nd = fam.groupby(["params", "tokens"])["loss"].min().reset_index()
    attempt("chinchilla", lambda: fit_chinchilla(best_nd["params"], best_nd["tokens"], best_nd["loss"]))
    iso = _isoflop_table(fam)

    def isoflop():
        n_fit, d_fit, _ = fit_isoflop_laws(iso, n_boot=n_boot, seed=seed)
        report.laws["d_opt"] = d_fit
        return n_fit

    attempt("n_opt", isoflop)
    if "n_opt" in report.excluded:
        report.excluded["d_opt"] = report.excluded["n_opt"]

    if "experts" in df.columns:
        attempt("routing", lambda: _routing(df, fam, seed))
    if only is None or "leverage" in only:
        say("efficiency leverage")
        _leverage(report, df, grids, n_boot, seed, attempt)
        report.structure = structure_dependence(df, grids)
    if only is None or "fp8_gap" in only:
        _precision(report, df)
    _what_moved(report, fam)
    if check:
        say("held-out check: every law refitted without the largest budget")
        report.held_out = held_out_check(runs, optimum, n_boot=min(n_boot, 200), seed=seed, full=report)
    for law in report.laws.values():
        law.verdict = judge(law, target_flops, report.optima, report.held_out)
    return report


def _leverage(report: FitReport, df: pd.DataFrame, grids: dict[str, Optima], n_boot: int, seed: int,
              attempt) -> None:
    if "dense" not in set(df["family"]) or "activation_ratio" not in df.columns:
        report.excluded["leverage"] = "no dense baseline runs (family 'dense') to measure leverage against"
        return
    try:
        losses, reps, how = lev.family_losses(df, n_boot=n_boot, seed=seed, optima=grids)
        curves = lev.family_curves(losses, reps, n_boot=n_boot, seed=seed)  # fitted once, used twice below
        table = lev.leverage_table(df, curves=curves, losses=losses, replicates=reps)
        if table.empty:
            raise FitError("no MoE family with runs at >= 3 budgets beside a dense baseline with runs at >= 3 "
                           "budgets")
        table["verdict"] = [el_verdict(r["el"], None if np.isnan(r["el_lo"]) else [r["el_lo"], r["el_hi"]])
                            for _, r in table.iterrows()]
        report.leverage = table
        report.notes.append("efficiency leverage: each family at its own tuned lr (bowl minimum per budget)"
                            if how == "tuned" else "efficiency leverage: families compared at the (lr, batch) "
                                                   "settings they share (not every family has an lr grid)")
        attempt("leverage", lambda: lev.fit_el_vs_activation(
            table.groupby("activation_ratio", as_index=False)["el"].mean(), seed=stream(seed, "leverage")))

        def granularity():
            fit, best = lev.fit_el_vs_granularity(table, seed=stream(seed, "leverage_granularity"))
            report.notes.append(f"EL peaks at granularity G = {best:.3g} (leverage_granularity)")
            return fit

        attempt("leverage_granularity", granularity)
        top = table[table["budget"] == table["budget"].max()]
        best_family = str(top.loc[top["el"].idxmax(), "family"])
        attempt("leverage_compute", lambda: lev.el_vs_compute(curves, best_family))
        attempt("ling_joint", lambda: lev.fit_ling_joint(table))
    except FitError as e:
        report.excluded["leverage"] = str(e)


def _routing(df: pd.DataFrame, fam: pd.DataFrame, seed: int) -> LawFit:
    """Clark et al.'s L(N, E) through the main family's configurations and every dense run (experts = 1): the best
    loss of each (N, E)."""
    rows = pd.concat([fam, df[(df["experts"] == 1) & (df["family"] != fam["family"].iloc[0])]])
    best = rows.groupby(["params", "experts"])["loss"].min().reset_index()
    return fit_routing_law(best["params"], best["experts"], best["loss"], seed=stream(seed, "routing"))


def _precision(report: FitReport, df: pd.DataFrame) -> None:
    """The FP8 gap laws, when the runs hold FP8 runs (a sweep without any says nothing about them)."""
    from scaling.fit.precision_gap import precision_gaps

    if "precision" not in df.columns or not (df["precision"] == "fp8").any():
        return
    try:
        report.precision, report.precision_pairs, laws = precision_gaps(df)
    except FitError as e:
        report.excluded["fp8_gap"] = str(e)
        return
    report.laws.update(laws)


def structure_dependence(df: pd.DataFrame, grids: dict[str, Optima]) -> dict | None:
    """Do the optima depend on the MoE structure (Ling: they depend on compute, not on A or G)? With an lr grid
    for >= 2 families (`grids`, from `optima.lr_grid_optima`): ln lr* = c0 + b ln C + g_A ln A (+ g_G ln G),
    refitted per run-level resample; the slopes with 95% intervals, and what they mean over the swept range. None
    without such families."""
    if not {"activation_ratio", "granularity"} <= set(df.columns):
        return None
    rows, reps = [], []
    for family, opt in grids.items():
        if opt.groups["budget"].nunique() < 2:
            continue
        g = df[df["family"] == family]
        rows.append(opt.groups.assign(A=float(g["activation_ratio"].iloc[0]), G=float(g["granularity"].iloc[0]),
                                      family=family))
        reps.append(opt.replicates.get("lr"))
    if len(rows) < 2:
        return None
    t = pd.concat(rows, ignore_index=True)
    slopes = [c for c in ("A", "G") if t[c].nunique() > 1]
    if not slopes:
        return None
    X = np.column_stack([np.ones(len(t)), np.log(t["C"]), *(np.log(t[c]) for c in slopes)])
    if len(slopes) == 2 and np.linalg.matrix_rank(X) < X.shape[1]:  # A and G moved together (e.g. the dense
        slopes = ["A"]                                              # baseline): one slope, read as A's
        X = X[:, :3]
    if len(t) <= X.shape[1] or np.linalg.matrix_rank(X) < X.shape[1]:
        return None
    coef = np.linalg.lstsq(X, np.log(t["lr"]), rcond=None)[0]
    draws = None
    if all(r is not None for r in reps):
        Y = np.log(np.concatenate(reps))
        Y = Y[:, np.all(np.isfinite(Y), axis=0)]
        draws = (np.linalg.pinv(X) @ Y).T if Y.shape[1] >= MIN_RESAMPLES else None
    out = {"families": sorted(t["family"].astype(str).unique()), "n_optima": len(t)}
    for j, c in enumerate(slopes, start=2):
        interval = percentile_interval(draws[:, j]) if draws is not None else None
        span = float(np.log(t[c].max() / t[c].min()))
        item = {"slope": float(coef[j]), "interval": interval, "swept": [float(t[c].min()), float(t[c].max())]}
        if interval is None:
            item["reading"] = "no interval (no run-level resamples)"
        elif interval[0] <= 0 <= interval[1]:
            worst = math.exp(max(abs(interval[0]), abs(interval[1])) * span)
            item["reading"] = (f"no dependence on {c} resolved: over {c} = {t[c].min():.3g}..{t[c].max():.3g} the "
                               f"optimal lr moves less than x{worst:.3g} (95%); one lr law can serve these structures")
        else:
            moved = math.exp(abs(coef[j]) * span)
            item["reading"] = (f"lr* depends on {c}: x{moved:.3g} over {c} = {t[c].min():.3g}..{t[c].max():.3g}; "
                               f"each structure needs its own lr law")
        out[f"d ln lr* / d ln {c}"] = item
    return out


def held_out_check(runs: Runs, optimum: str = "quadratic", n_boot: int = 200, seed: int = 0,
                   full: FitReport | None = None) -> dict | None:
    """Fit without the largest budget of the main family; predict lr, batch, loss and (IsoFLOP) N_opt there; compare
    with what the runs at that budget achieved (their bowl's optimum and minimum, the IsoFLOP vertex). Each item
    holds the law's interval (`mean_interval`) and the interval a measurement should fall in (`interval`: widened by
    the measurement's own noise), and how far the refit extrapolated (`extrapolation`). None with < 4 budgets."""
    df = runs.df
    family = main_family(df)
    fam = df[df["family"] == family]
    budgets = sorted(fam["budget"].unique())
    if len(budgets) < 4:
        return None
    top = budgets[-1]
    rest = Runs(df=df[df["budget"] < top].reset_index(drop=True), source=runs.source)
    report = fit_all(rest, optimum, n_boot=n_boot, seed=seed, check=False, only=HELD_OUT_LAWS)
    C_top = float(fam.loc[fam["budget"] == top, "flops"].median())
    out: dict = {"budget": float(top), "C": C_top}
    achieved: dict = {}  # item -> (value, its own interval or None)
    if full is not None and full.optima is not None:
        g = full.optima[full.optima["budget"] == top]
        if len(g) == 1 and bool(g["interior"].iloc[0]):
            for item in ("lr", "batch_tokens"):
                achieved[item] = (float(g[item].iloc[0]), _interval_of(g.iloc[0], item))
        if len(g):
            best = g.loc[g["loss"].idxmin()]
            achieved["loss"] = (float(best["loss"]), _interval_of(best, "loss"))
    achieved.setdefault("loss", (float(_budget_losses(fam[fam["budget"] == top], None)[1][0]), None))
    iso = isoflop_optima(_isoflop_table(fam))
    if len(iso) and float(iso["budget"].max()) == float(top):
        achieved["n_opt"] = (float(iso.loc[iso["budget"].idxmax(), "n_opt"]), None)
    for item, law in (("lr", "lr_opt"), ("batch_tokens", "batch_opt"), ("loss", "loss_vs_compute"),
                      ("n_opt", "n_opt")):
        if law in report.laws and item in achieved:
            fit = report.laws[law]
            at = float(top) if law == "n_opt" else C_top  # IsoFLOP laws are fitted against the budget
            p = fit.predict(**{"C": at})
            value, own = achieved[item]
            log = item != "loss"
            out[item] = {"predicted": p.value, "mean_interval": p.interval, "achieved": value,
                         "achieved_interval": own,
                         "interval": prediction_interval(p.value, p.interval, value, own, log),
                         "relative_error": p.value / value - 1, "extrapolation": fit.extrapolation(C=at)}
    return out if len(out) > 2 else None


def _interval_of(row, col: str) -> list[float] | None:
    lo, hi = row.get(f"{col}_lo"), row.get(f"{col}_hi")
    return [float(lo), float(hi)] if lo is not None and hi is not None and np.isfinite([lo, hi]).all() else None
