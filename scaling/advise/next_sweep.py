"""The next rung: the verdicts' advice ("add a budget above 3e12", "widen lr downwards at C = 1e11", "add a seed at
C = 3e11") as a sweep config, so fit -> next sweep -> refit is one command each (`scaling next SWEEP`).

Each law's verdict carries its advice as data (`fit/verdict.py`, ACTIONS); every action becomes one part of the
next sweep, on the fitted family's own config (its run at the largest budget, as the verification sweep uses):

- add_budget C: the budget C (the fit's convention, converted to budget_flops for the family's model), at the
  learning rates the law predicts there times the swept grid's spacing (or, without an lr law, the lrs of the
  largest budget), every seed swept;
- widen_lr (down|up) at a budget: two more learning rates beyond the swept edge, one and two grid steps away;
- add_lrs at a budget: one more learning rate on each side of the swept range;
- add_seed at a budget: one new seed at every learning rate swept there.

The next sweep keeps the fitted sweep's name, so its runs land beside the first ones and `scaling fit SWEEP` fits
them together; cells already trained are recognised by their run id and not trained again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from scaling.advise import compute
from scaling.advise.family import family_model, family_sweep, has_config, largest_run, swept_seeds
from scaling.advise.fitfile import FitFile

LR_STEPS_NEW_BUDGET = 5
"""Learning rates at a new budget when the swept grid had fewer."""


def actions_of(fit: FitFile) -> list[dict]:
    """Every law's advised actions, once each, in the order the laws list them; without an lr law (too few
    budgets, or no bowl inside its grid), what the optima ask for: the next x3 budget, and every grid edge
    widened."""
    out: list[dict] = []
    for law in fit.laws.values():
        for action in (law.verdict or {}).get("actions") or []:
            if action not in out:
                out.append(action)
    if "lr_opt" not in fit.laws:
        out += [a for a in _optima_actions(fit.payload.get("optima") or []) if a not in out]
    return out


def _optima_actions(optima: list[dict]) -> list[dict]:
    from scaling.fit.verdict import DEFAULT_JUDGE_FACTOR, MIN_INTERIOR

    actions = []
    Cs = [o["C"] for o in optima if o.get("C")]
    if Cs and len(Cs) < MIN_INTERIOR:
        actions.append({"kind": "add_budget", "C": float(f"{DEFAULT_JUDGE_FACTOR * max(Cs):.3g}")})
    for o in optima:
        at = {"C": float(o["C"]), "budget": float(o.get("budget") or o["C"])}
        if o.get("edge") == "below":
            actions.append({"kind": "widen_lr", **at, "direction": "down", "lr": float(o["lr_min"])})
        elif o.get("edge") == "above":
            actions.append({"kind": "widen_lr", **at, "direction": "up", "lr": float(o["lr_max"])})
        elif o.get("edge") == "none":
            actions.append({"kind": "add_lrs", **at})
    return actions


def _lr_step(fam: pd.DataFrame) -> float:
    """The swept grid's ratio between neighbouring learning rates (2 for the demo's x2 grid)."""
    steps = []
    for _, g in fam.groupby("budget"):
        lrs = np.sort(g["lr"].unique())
        if len(lrs) >= 2:
            steps.append(float(np.exp(np.median(np.diff(np.log(lrs))))))
    return float(np.median(steps)) if steps else 2.0


def _round(x: float) -> float:
    return float(f"{x:.4g}")


def _at_budget(fam: pd.DataFrame, budget: float) -> pd.DataFrame:
    return fam[np.isclose(fam["budget"], budget, rtol=1e-3)]


def _part(action: dict, fam: pd.DataFrame, fit: FitFile, step: float, seeds: list[int], model) -> dict | None:
    kind = action["kind"]
    if kind == "add_budget":
        C = action["C"]
        largest = _at_budget(fam, fam["budget"].max())
        n = max(LR_STEPS_NEW_BUDGET, largest["lr"].nunique())
        if "lr_opt" in fit.laws:
            centre = float(fit.laws["lr_opt"].value(C=C))
            lrs = [centre * step ** (i - (n - 1) / 2) for i in range(n)]
        else:
            lrs = sorted(largest["lr"].unique())
        return {"budgets": [float(f"{compute.budget_flops(C, model, fit.convention):.3g}")],
                "lr": {"values": [_round(x) for x in lrs]}, "seeds": seeds}
    here = _at_budget(fam, action["budget"])
    if here.empty:
        return None
    lrs = sorted(here["lr"].unique())
    if kind == "widen_lr":
        sign = -1 if action["direction"] == "down" else 1
        new = [action["lr"] * step ** (sign * k) for k in (1, 2)]
        return {"budgets": [action["budget"]], "lr": {"values": [_round(x) for x in sorted(new)]}, "seeds": seeds}
    if kind == "add_lrs":
        return {"budgets": [action["budget"]], "lr": {"values": [_round(lrs[0] / step), _round(lrs[-1] * step)]},
                "seeds": seeds}
    if kind == "add_seed":
        return {"budgets": [action["budget"]], "lr": {"values": [float(x) for x in lrs]},
                "seeds": [max(seeds) + 1]}
    return None


def next_sweep(fit: FitFile, runs: pd.DataFrame, sweep: str) -> dict | None:
    """The next sweep (a config dict) from the advice in `fit` on the records `runs` of `sweep`; None when no law
    asks for more runs."""
    actions = actions_of(fit)
    if not actions:
        return None
    family = fit.payload.get("family") or str(runs["family"].value_counts().idxmax())
    fam = runs[runs["family"] == family]
    row = largest_run(fam)
    if not has_config(row):
        raise ValueError("the next sweep needs the runs' configs: fit the sweep's own records, not a CSV or W&B")
    model = family_model(row)
    seeds = swept_seeds(fam)
    step = _lr_step(fam)
    parts, said = [], []
    for action in actions:
        part = _part(action, fam, fit, step, seeds, model)
        if part is not None and part not in parts:
            parts.append(part)
            said.append(_describe(action))
    if not parts:
        return None
    family = family_sweep(row)
    return {
        "name": sweep,
        "description": f"next rung of {sweep} from {Path(fit.path).name}: " + "; ".join(said),
        "base": family["base"],
        "batch": family["batch"],
        "budgets": sorted({b for p in parts for b in p["budgets"]}),
        "parts": parts,
    }


def _describe(action: dict) -> str:
    kind, C = action["kind"], action["C"]
    if kind == "add_budget":
        return f"add a budget at C = {C:.3g}"
    if kind == "widen_lr":
        return f"widen lr {'downwards' if action['direction'] == 'down' else 'upwards'} at C = {C:.3g}"
    if kind == "add_lrs":
        return f"add learning rates at C = {C:.3g}"
    return f"add a seed at C = {C:.3g}"
