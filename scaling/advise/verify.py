"""Predict, then verify: a fit's predictions checked by training at budgets it has not seen.

One mechanism for both of the Ling team's checks:

- the **verification sweep** (`verification_sweep`): from a fit, the swept family's run at a held-out larger budget
  (by default 3x the largest fitted one), at the predicted lr times a few factors, with seeds; `scaling fit` writes
  it as `verify.yaml` beside fit.json;
- the **wind-tunnel ladder** (`sweeps/wind_tunnel.yaml`): model sizes at their compute-optimal budgets from a fit.

Both sweeps name the fit they came from (`laws:`, kept in their plan.json). `check_predictions` then groups the
sweep's completed runs by (budget, model) and reports, per group, the predicted optimum lr and loss (with their 95%
intervals, from the fit's resamples) against what training measured there: the optimum of the group's lr bowl
and its minimum loss (with run-level intervals) when the group has >= 3 learning rates, else the runs' mean loss.
A prediction **held** when predicted and measured agree within their combined 95% uncertainty
(|difference| <= sqrt(half-width_predicted^2 + half-width_measured^2), in ln lr for the learning rate).
Numbers only: no formula is evaluated from text.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from scaling import store
from scaling.advise import compute
from scaling.advise.family import family_model, family_sweep, largest_run, swept_seeds
from scaling.advise.fitfile import FitFile, read_fit
from scaling.fit.inputs import InputError, from_store
from scaling.fit.law import FitError, LawFit
from scaling.fit.uncertainty import prediction_interval

DEFAULT_VERIFY_FACTOR = 3.0
"""The verification budget, without one given: this many times the largest fitted budget."""
DEFAULT_LR_FACTORS = (0.5, 1.0, 2.0)


def laws_path_of(results_dir: Path, sweep: str) -> Path | None:
    """The fit a sweep was built from (its plan.json's `laws`), resolved like the sweep resolved it."""
    try:
        laws = (store.read_plan(results_dir, sweep) or {}).get("laws")
    except store.StoreError as e:
        raise InputError(str(e)) from None
    if not laws:
        return None
    from scaling.compose import find_file, search_path

    return find_file(laws, search_path())


def _read(path: Path) -> FitFile:
    try:
        return read_fit(path)
    except FitError as e:
        raise InputError(str(e)) from None


def _held(pred: float, pred_iv, meas: float, meas_iv, log: bool) -> bool | None:
    """Whether the measurement fell inside the prediction interval (the law's, widened by the measurement's own)."""
    iv = prediction_interval(pred, pred_iv, meas, meas_iv, log)
    return None if iv is None else bool(iv[0] <= meas <= iv[1])


def _predict_loss(laws: dict[str, LawFit], C: float, N: float, D: float):
    if "loss_vs_compute" in laws:
        return laws["loss_vs_compute"].predict(C=C), "loss_vs_compute"
    if "chinchilla" in laws:
        return laws["chinchilla"].predict(N=N, D=D), "chinchilla"
    return None, None


def combined_laws(paths: list[Path]) -> FitFile:
    """The laws of several fits as one: each law from the first file that has it (e.g. a wind tunnel's loss law
    from its rungs' fit and its lr law from its lr stage's). Fits that count FLOPs differently are refused."""
    fits = [_read(p) for p in paths]
    conventions = sorted({f.convention for f in fits})
    if len(conventions) > 1:
        raise InputError(f"the laws files count FLOPs differently ({', '.join(conventions)}): combine fits made in "
                         f"one convention (scaling fit --flops)")
    laws: dict[str, LawFit] = {}
    for f in fits:
        for name, law in f.laws.items():
            laws.setdefault(name, law)
    return FitFile(path=fits[0].path, laws=laws, convention=fits[0].convention, payload=fits[0].payload)


def _laws_paths(results_dir: Path, sweep: str, laws_path: Path | list[Path] | None) -> list[Path]:
    paths = [laws_path] if isinstance(laws_path, Path) else list(laws_path or [])
    if not paths:
        own = laws_path_of(results_dir, sweep)
        if own is None:
            raise InputError(f"sweep {sweep!r} names no laws: pass --laws PATH to the fit it was built from")
        paths = [own]
    return paths


def verification_figure(results_dir: Path, sweep: str, table: pd.DataFrame,
                        laws_path: Path | list[Path] | None = None) -> list[Path]:
    """The loss law through the points it was fitted to, its 95% band out to the checked budgets, and there the
    prediction against the measured loss (fit/plots.plot_verification), in <results>/<sweep>/verify/; nothing
    without a loss_vs_compute law or a checked loss."""
    from scaling.fit.plots import plot_verification

    laws = combined_laws(_laws_paths(results_dir, sweep, laws_path)).laws
    if "loss_vs_compute" not in laws or "loss_predicted" not in table.columns:
        return []
    return plot_verification(laws["loss_vs_compute"], table, store.verify_dir(results_dir, sweep))


def check_predictions(results_dir: Path, sweep: str, laws_path: Path | list[Path] | None = None,
                      n_boot: int = 1000) -> pd.DataFrame:
    """One row per (budget, model) group of the sweep's completed runs: predicted against measured optimum lr and
    loss, with intervals, errors and whether each prediction held. `laws_path`: one fit, or several read as one
    (`combined_laws`); default the sweep's own `laws`. The measured loss is read as the loss law's points were: an
    lr bowl's minimum, or (a law through runs at a law's lr, as a wind tunnel's rungs) the mean over seeds of the
    runs at the predicted lr."""
    from scaling.fit.optima import GROUP_COLS, group_optima
    from scaling.fit.report import LOSS_POINTS_AT_LR

    paths = _laws_paths(results_dir, sweep, laws_path)
    fit = combined_laws(paths)
    laws = fit.laws
    if "loss_vs_compute" not in laws and "chinchilla" not in laws and "lr_opt" not in laws:
        raise InputError(f"{', '.join(map(str, paths))}: no law to check (lr_opt, loss_vs_compute or chinchilla)")
    at_lr = ((laws["loss_vs_compute"].diagnostics or {}).get("points", {}).get("read_as") == LOSS_POINTS_AT_LR
             if "loss_vs_compute" in laws else False)
    try:
        runs = from_store(results_dir, sweep, convention=fit.convention)
    except InputError as e:
        raise InputError(f"{e} (run the verification sweep first)") from None
    df = runs.df
    rows = []
    for (params, tokens), g in df.groupby(GROUP_COLS):
        C, N, D = float(g["flops"].median()), float(params), float(tokens)
        row = {"budget": float(g["budget"].iloc[0]), "C": C, "params": N, "tokens": D, "n_runs": len(g),
               "name": str(g["id"].iloc[0]) if len(g) == 1 else f"{len(g)} runs"}
        measured_lr = measured_lr_iv = None
        if g["lr"].nunique() >= 3:
            bowl = group_optima(g, GROUP_COLS, n_boot=n_boot)
            opt = bowl.groups.iloc[0]
            measured_lr = float(opt["lr"]) if opt["interior"] else None
            measured_lr_iv = bowl.interval("lr", 0)
            measured_loss, measured_loss_iv = float(opt["loss"]), bowl.interval("loss", 0)
            row["bowl"] = "interior" if opt["interior"] else f"optimum on the grid edge ({opt['edge']})"
        else:
            losses = g.groupby(["lr", "batch_tokens"])["loss"].mean()
            measured_loss, measured_loss_iv = float(losses.min()), None
            if len(losses) == 1:
                measured_loss_iv = _mean_interval(g["loss"])
            row["bowl"] = f"{g['lr'].nunique()} lr"
        if at_lr and "lr_opt" in laws:  # the law's points were runs at the lr law's value: read this one so too
            lr_law = laws["lr_opt"].value(C=C)
            near = g[(np.log(g["lr"] / lr_law)).abs() < LR_MATCH]
            if len(near):
                measured_loss, measured_loss_iv = float(near["loss"].mean()), _mean_interval(near["loss"])
                row["loss_read_as"] = f"mean of {len(near)} run(s) at the predicted lr"
        row.setdefault("loss_read_as", "lr bowl minimum" if g["lr"].nunique() >= 3 else "best lr, mean over seeds")
        if "lr_opt" in laws:
            p = laws["lr_opt"].predict(C=C)
            row.update(lr_verdict=(laws["lr_opt"].verdict or {}).get("verdict"), lr_predicted=p.value,
                       lr_predicted_lo=_lo(p.interval), lr_predicted_hi=_hi(p.interval))
            if measured_lr is not None:
                row.update(lr_measured=measured_lr, lr_measured_lo=_lo(measured_lr_iv),
                           lr_measured_hi=_hi(measured_lr_iv), lr_ratio=p.value / measured_lr,
                           lr_held=_held(p.value, p.interval, measured_lr, measured_lr_iv, log=True))
        p, law = _predict_loss(laws, C, N, D)
        row.update(loss_measured=measured_loss, loss_measured_lo=_lo(measured_loss_iv),
                   loss_measured_hi=_hi(measured_loss_iv))
        if p is not None:
            row.update(loss_verdict=(laws[law].verdict or {}).get("verdict"), loss_predicted=p.value,
                       loss_predicted_lo=_lo(p.interval), loss_predicted_hi=_hi(p.interval),
                       loss_error=measured_loss - p.value, loss_law=law,
                       loss_held=_held(p.value, p.interval, measured_loss, measured_loss_iv, log=False),
                       extrapolation=laws[law].extrapolation(C=C) if law == "loss_vs_compute" else None)
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["budget", "params"]).reset_index(drop=True)


LR_MATCH = 0.02
"""Runs within 2% (in ln lr) of the lr law's value count as trained at it (the FLOPs of whole sequences move C,
and so the law's value, by a fraction of that)."""


def _mean_interval(losses: pd.Series) -> list[float] | None:
    """The 95% interval of the mean of runs of one configuration (normal, from their spread); None for < 2 runs."""
    losses = losses.dropna()
    if len(losses) < 2:
        return None
    mean, sd = float(losses.mean()), float(losses.std(ddof=1)) / math.sqrt(len(losses))
    return [mean - 1.96 * sd, mean + 1.96 * sd]


def _lo(iv):
    return None if iv is None else iv[0]


def _hi(iv):
    return None if iv is None else iv[1]


# ---- the verification sweep ------------------------------------------------------------------------------------
def verification_sweep(report, runs: pd.DataFrame, fit_json: Path, budget_flops: float | None = None,
                       lr_factors: tuple[float, ...] = DEFAULT_LR_FACTORS, seeds: tuple[int, ...] | None = None,
                       name: str | None = None) -> dict:
    """A sweep config (as a dict) that trains the fit's family at a held-out budget C (in the fit's convention;
    default 3x the largest fitted) at the predicted lr times `lr_factors`: the predicted lr itself with every seed
    (`seeds`, default: as swept), the others with the first (a bowl with residual degrees of freedom, for two thirds
    of the runs every factor with every seed would cost)."""
    if "lr_opt" not in report.laws:
        raise InputError(f"no lr_opt law to verify ({report.excluded.get('lr_opt', 'not fitted')})")
    fam = runs[runs["family"] == report.family]
    if "config" not in fam.columns or not len(fam):
        raise InputError("a verification sweep needs runs from the results store (their configs)")
    law = report.laws["lr_opt"]
    C = float(budget_flops) if budget_flops else DEFAULT_VERIFY_FACTOR * law.fitted_range["C"][1]
    if not C > 0:
        raise InputError(f"--verify-at {budget_flops}: must be a positive number of FLOPs")
    row = largest_run(fam)
    lr = law.value(C=C)
    family = family_sweep(row)
    seeds = list(seeds) if seeds else swept_seeds(fam)
    values = [float(f"{lr * f:.4g}") for f in lr_factors]
    centre = [v for v, f in zip(values, lr_factors, strict=True) if f == 1.0]
    parts = [{"lr": {"values": centre}, "seeds": seeds},
             {"lr": {"values": [v for v in values if v not in centre]}, "seeds": seeds[:1]}] \
        if len(seeds) > 1 and centre and len(values) > 1 else []
    return {
        "name": name or f"{row['group']}-verify",
        "description": f"verify {Path(fit_json).name}: lr_opt and the loss law at C = {C:.3g} "
                       f"({C / law.fitted_range['C'][1]:.3g}x the largest fitted budget), predicted lr {lr:.3g}",
        "laws": str(Path(fit_json).resolve()),
        "base": family["base"],
        "budgets": [float(f"{compute.budget_flops(C, family_model(row), report.convention):.4g}")],
        "lr": {"values": values},
        "batch": family["batch"],
        "seeds": seeds,
        **({"parts": parts} if parts else {}),
    }
