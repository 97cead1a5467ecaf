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


def check_predictions(results_dir: Path, sweep: str, laws_path: Path | None = None,
                      n_boot: int = 1000) -> pd.DataFrame:
    """One row per (budget, model) group of the sweep's completed runs: predicted against measured optimum lr and
    loss, with intervals, errors and whether each prediction held."""
    from scaling.fit.optima import GROUP_COLS, group_optima

    laws_path = laws_path or laws_path_of(results_dir, sweep)
    if laws_path is None:
        raise InputError(f"sweep {sweep!r} names no laws: pass --laws PATH to the fit it was built from")
    fit = _read(laws_path)
    laws = fit.laws
    if "loss_vs_compute" not in laws and "chinchilla" not in laws and "lr_opt" not in laws:
        raise InputError(f"{laws_path} has no law to check (lr_opt, loss_vs_compute or chinchilla)")
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
            if g["loss"].count() >= 2 and len(losses) == 1:
                sd = float(g["loss"].std(ddof=1)) / math.sqrt(len(g))
                measured_loss_iv = [measured_loss - 1.96 * sd, measured_loss + 1.96 * sd]
            row["bowl"] = f"{g['lr'].nunique()} lr"
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


def _lo(iv):
    return None if iv is None else iv[0]


def _hi(iv):
    return None if iv is None else iv[1]


# ---- the verification sweep ------------------------------------------------------------------------------------
def verification_sweep(report, runs: pd.DataFrame, fit_json: Path, budget_flops: float | None = None,
                       lr_factors: tuple[float, ...] = DEFAULT_LR_FACTORS, seeds: tuple[int, ...] | None = None,
                       name: str | None = None) -> dict:
    """A sweep config (as a dict) that trains the fit's family at a held-out budget C (in the fit's convention;
    default 3x the largest fitted) at the predicted lr times `lr_factors`, with `seeds` (default: as swept)."""
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
    return {
        "name": name or f"{row['group']}-verify",
        "description": f"verify {Path(fit_json).name}: lr_opt and the loss law at C = {C:.3g} "
                       f"({C / law.fitted_range['C'][1]:.3g}x the largest fitted budget), predicted lr {lr:.3g}",
        "laws": str(Path(fit_json).resolve()),
        "base": family["base"],
        "budgets": [float(f"{compute.budget_flops(C, family_model(row), report.convention):.4g}")],
        "lr": {"values": [float(f"{lr * f:.4g}") for f in lr_factors]},
        "batch": family["batch"],
        "seeds": list(seeds) if seeds else swept_seeds(fam),
    }
