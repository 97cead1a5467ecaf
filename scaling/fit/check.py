"""The wind-tunnel check: a fit's predicted final loss against what each rung of a ladder sweep achieved.

Reads the laws (a `scaling fit --json` output: the sweep's own `laws`, recorded in its plan.json, unless given)
and the sweep's completed records; predicts each rung's loss with `loss_vs_compute` at its budget, or with
`chinchilla` at its (N, D) when the fit has no loss-compute law. Numbers only: no formula is evaluated from text.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from scaling import store
from scaling.fit.inputs import InputError


def _laws(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())["laws"]
    except FileNotFoundError:
        raise InputError(f"laws file {path} not found: pass --laws PATH to a `scaling fit --json` output") from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise InputError(f"{path} is not a `scaling fit --json` output (no 'laws')") from None


def laws_path_of(results_dir: Path, sweep: str) -> Path | None:
    plan = store.sweep_dir(results_dir, sweep) / "plan.json"
    if not plan.is_file():
        return None
    laws = json.loads(plan.read_text()).get("laws")
    if not laws:
        return None
    from scaling.config import CONFIG_DIR

    p = Path(laws)
    return p if p.is_absolute() or p.exists() else CONFIG_DIR / p


def wind_tunnel_check(results_dir: Path, sweep: str, laws_path: Path | None = None) -> pd.DataFrame:
    """One row per completed rung: budget, N, D, predicted and achieved loss, their difference."""
    laws_path = laws_path or laws_path_of(results_dir, sweep)
    if laws_path is None:
        raise InputError(f"sweep {sweep!r} names no laws: pass --laws PATH to the fit the ladder was built from")
    laws = _laws(laws_path)
    if "loss_vs_compute" in laws:
        p = laws["loss_vs_compute"]["params"]

        def predict(C, N, D):
            return p["E"] + p["A"] * C ** -p["alpha"]
        source = "loss_vs_compute"
    elif "chinchilla" in laws:
        p = laws["chinchilla"]["params"]

        def predict(C, N, D):
            return p["E"] + p["A"] / N ** p["alpha"] + p["B"] / D ** p["beta"]
        source = "chinchilla"
    else:
        raise InputError(f"{laws_path} has no loss law (loss_vs_compute or chinchilla) to predict the rungs with")
    rows = []
    for _, rec in store.iter_records(results_dir, sweep):
        if rec["status"] != "completed":
            continue
        d = rec["derived"]
        C, N, D = d["budget_flops"], d["params_active_non_embedding"], d["tokens"]
        predicted, achieved = predict(C, N, D), rec["results"]["val_loss"]
        rows.append({"name": rec["name"], "budget": C, "params": N, "tokens": D, "predicted": predicted,
                     "achieved": achieved, "difference": achieved - predicted, "law": source})
    if not rows:
        raise InputError(f"no completed runs in sweep {sweep!r} under {results_dir}: run the ladder first")
    return pd.DataFrame(rows).sort_values("budget").reset_index(drop=True)
