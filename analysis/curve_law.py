"""Does a law over the whole validation curve predict a longer run better than a law through end points?

Tissue et al. 2024 ("Scaling Law with Learning Rate Annealing") fit one model's held-out loss along its schedule,
L(s) = L0 + A * S1(s)^-alpha - C * S2(s), where S1 is the sum of the learning rates so far (the forward area, in
units of the peak lr) and S2 the annealing area (the sum over steps of m_i = lam * m_{i-1} + (eta_{i-1} - eta_i),
lam = 0.999 as in the paper; the warmup counts as peak lr in both, as the paper leaves it out). Every curve point
is a data point, hundreds per sweep instead of one per run.

The test, on a sweep whose runs share one model and lr at several budgets (an IsoFLOP stage's widths under WSD,
`make wind-tunnel`'s `wind_tunnel_cpu_isoflop`): for each such family with >= 4 budgets, fit on every run but the
longest and predict the longest run's final held-out loss (on the curve's slice, `train.curve_val_tokens`, which
every curve point is measured on). Against it, the end-point law: a power law in tokens, a * D^b, through the
shorter runs' final losses. The errors are printed side by side.

    python analysis/curve_law.py --results results --sweep wind_tunnel_cpu_isoflop [--lam 0.999]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from scaling import store
from scaling.config import from_dict
from scaling.lr_schedule import lr_at, warmup_steps

LAMBDA = 0.999
FIRST_STEP = 16
"""Curve points before this step are the first fall from the initial loss, which no such law describes."""


def areas(run, steps: int, lam: float = LAMBDA) -> tuple[np.ndarray, np.ndarray]:
    """S1 and S2 after each step 1..steps of a run's schedule (learning rates in units of the peak)."""
    eta = np.array([lr_at(i, steps, run.train) for i in range(steps)]) / run.train.lr
    eta[:warmup_steps(run.train, steps)] = 1.0  # as Tissue et al.: the warmup is not part of either area
    s1 = np.cumsum(eta)
    drop = np.diff(np.concatenate([[eta[0]], eta]))  # eta_i - eta_{i-1}
    m = np.zeros(steps)
    for i in range(steps):
        m[i] = (lam * m[i - 1] if i else 0.0) - drop[i]
    return s1, np.cumsum(m)


def curve_points(record: dict, lam: float = LAMBDA) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(S1, S2, slice loss) at the run's curve points from FIRST_STEP on, and its final slice loss."""
    run = from_dict(record["config"])
    steps = record["derived"]["steps"]
    tokens = run.train.curve_val_tokens
    pts = [e for e in record["results"]["evals"] if e.get("val_tokens") == tokens and e["step"] >= FIRST_STEP]
    if not pts:
        raise SystemExit(f"record {record['id']} has no validation curve (train.curve_val_tokens=0 when trained)")
    s1, s2 = areas(run, steps, lam)
    idx = np.array([p["step"] for p in pts]) - 1
    loss = np.array([p["val_loss"] for p in pts])
    return s1[idx], s2[idx], loss, float(loss[-1])


def fit_tissue(S1: np.ndarray, S2: np.ndarray, L: np.ndarray) -> np.ndarray:
    """(L0, A, alpha, C) by least squares from a few starts."""
    def resid(p):
        return p[0] + p[1] * S1 ** -p[2] - p[3] * S2 - L

    best = None
    for alpha in (0.2, 0.5, 1.0):
        r = least_squares(resid, [L.min() * 0.8, 2.0, alpha, 0.1], bounds=([0, 0, 0.01, 0], [L.min(), 1e4, 3, 10]))
        if best is None or r.cost < best.cost:
            best = r
    return best.x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results")
    ap.add_argument("--sweep", default="wind_tunnel_cpu_isoflop")
    ap.add_argument("--lam", type=float, default=LAMBDA, help="decay of the annealing momentum (paper: 0.999)")
    args = ap.parse_args()
    families: dict[tuple, list[dict]] = {}
    for path in sorted(store.runs_dir(Path(args.results), args.sweep).glob("*.json")):
        rec = store.read_record(path)
        if rec["status"] != "completed" or rec["config"]["train"]["schedule"] != "wsd":
            continue
        key = (rec["config"]["model"]["d_model"], rec["config"]["train"]["lr"], rec["config"]["seed"])
        families.setdefault(key, []).append(rec)
    print(f"{'family':24s} {'held-out D':>11s} {'measured':>9s} {'curve law':>10s} {'err':>7s} "
          f"{'a*D^b':>7s} {'err':>7s}")
    errs = {"curve": [], "end": []}
    for (d, lr, seed), recs in sorted(families.items()):
        recs.sort(key=lambda r: r["derived"]["steps"])
        if len(recs) < 4:
            continue
        fit_recs, held = recs[:-1], recs[-1]
        pts = [curve_points(r, args.lam) for r in fit_recs]
        p = fit_tissue(*(np.concatenate([q[i] for q in pts]) for i in range(3)))
        S1, S2, _, measured = curve_points(held, args.lam)
        curve_pred = p[0] + p[1] * S1[-1] ** -p[2] - p[3] * S2[-1]
        D = np.array([r["derived"]["tokens"] for r in fit_recs], float)
        b, log_a = np.polyfit(np.log(D), np.log([q[3] for q in pts]), 1)
        end_pred = float(np.exp(log_a) * held["derived"]["tokens"] ** b)
        errs["curve"].append(curve_pred - measured)
        errs["end"].append(end_pred - measured)
        print(f"d{d} lr {lr:.3g} seed {seed}".ljust(24) + f" {held['derived']['tokens']:11.3g} {measured:9.4f} "
              f"{curve_pred:10.4f} {curve_pred - measured:+7.4f} {end_pred:7.4f} {end_pred - measured:+7.4f}")
    if errs["curve"]:
        print(f"mean |error|: curve law {np.mean(np.abs(errs['curve'])):.4f}, "
              f"end-point power law {np.mean(np.abs(errs['end'])):.4f} ({len(errs['curve'])} families)")


if __name__ == "__main__":
    main()
