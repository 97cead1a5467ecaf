"""Hyperparameter optima per budget (or per (N, D) group), two ways (ARCHITECTURE section 8):

- ``quadratic`` (default): the minimum of a quadratic of loss in (ln lr, ln batch), or in ln lr alone when the
  batch does not vary in the group. On small noisy sweeps the lowest-loss cell jumps between seeds (measured here:
  seed-to-seed spread 0.03-0.09 nats at 3e11-1e12 FLOPs, as large as the gap between neighbouring learning rates),
  while the fitted bowl's minimum is stable. A bowl that does not open upwards, or whose minimum lies far outside
  the grid, falls back to the best run, with a note.
- ``near-optimal:TOL``: the published protocol of DeepSeek, Ling and Step-Law: every run whose loss is within TOL
  (default 0.25%) of its group's best is an optimum point; the laws are then fitted through all of them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

DEFAULT_TOL = 0.0025
MAX_EXTRAPOLATION = 1.0
"""A fitted optimum more than this many natural-log units (x e) outside the swept range falls back to the best run."""


def parse_method(method: str) -> tuple[str, float]:
    """'quadratic' or 'near-optimal[:TOL]' -> (kind, tol)."""
    if method == "quadratic":
        return "quadratic", DEFAULT_TOL
    if method.startswith("near-optimal"):
        _, _, tol = method.partition(":")
        try:
            value = float(tol.rstrip("%")) / (100 if tol.endswith("%") else 1) if tol else DEFAULT_TOL
        except ValueError:
            raise ValueError(f"--optimum {method!r}: TOL must be a number, e.g. near-optimal:0.0025") from None
        return "near-optimal", value
    raise ValueError(f"--optimum {method!r} is not 'quadratic' or 'near-optimal[:TOL]'")


def near_optimal(df: pd.DataFrame, group_cols: list[str], tol: float = DEFAULT_TOL) -> pd.DataFrame:
    """Rows whose loss is within `tol` (relative) of their group's best."""
    best = df.groupby(group_cols)["loss"].transform("min")
    return df[df["loss"] <= best * (1 + tol)]


def _vertex_1d(x: np.ndarray, y: np.ndarray) -> tuple[float, float] | None:
    c2, c1, c0 = np.polyfit(x, y, 2)
    if c2 <= 0:
        return None
    xv = -c1 / (2 * c2)
    return xv, c0 + c1 * xv + c2 * xv * xv


def _vertex_2d(x: np.ndarray, z: np.ndarray, y: np.ndarray) -> tuple[float, float, float] | None:
    A = np.column_stack([np.ones_like(x), x, z, x * x, z * z, x * z])
    c, *_ = np.linalg.lstsq(A, y, rcond=None)
    H = np.array([[2 * c[3], c[5]], [c[5], 2 * c[4]]])
    if np.any(np.linalg.eigvalsh(H) <= 0):
        return None
    xv, zv = np.linalg.solve(H, -c[1:3])
    return xv, zv, float(np.array([1, xv, zv, xv * xv, zv * zv, xv * zv]) @ c)


def quadratic_optimum(group: pd.DataFrame) -> dict:
    """Optimal lr (and batch) of one group of runs: the fitted bowl's minimum, or the best run with a note."""
    best = group.loc[group["loss"].idxmin()]
    out = {"lr": float(best["lr"]), "batch_tokens": float(best["batch_tokens"]), "loss": float(best["loss"]),
           "n_runs": len(group), "note": ""}
    x = np.log(group["lr"].to_numpy(float))
    z = np.log(group["batch_tokens"].to_numpy(float))
    y = group["loss"].to_numpy(float)
    n_lr, n_b = len(np.unique(x)), len(np.unique(z))
    if n_b >= 3 and n_lr >= 3 and len(group) >= 6 and _full_rank_2d(x, z):
        v = _vertex_2d(x, z, y)
        if v is not None and _inside(v[0], x) and _inside(v[1], z):
            out.update(lr=float(np.exp(v[0])), batch_tokens=float(np.exp(v[1])), loss=v[2])
            return out
    # Separable: a parabola in ln lr along the batch with the most lr values, and one in ln batch along the lr
    # with the most batch values (a "cross" design, or a 2-D bowl that does not open upwards).
    notes = []
    lr_fit = _line_optimum(x, y, z)
    if lr_fit is not None:
        out.update(lr=float(np.exp(lr_fit[0])), loss=lr_fit[1])
    else:
        notes.append("lr: best run (no upward bowl inside the swept range)")
    if n_b > 1:
        b_fit = _line_optimum(z, y, x)
        if b_fit is not None:
            out.update(batch_tokens=float(np.exp(b_fit[0])), loss=min(out["loss"], b_fit[1]))
        else:
            notes.append("batch: best run (fewer than 3 batch values or no upward bowl)")
    out["note"] = "; ".join(notes)
    return out


def _full_rank_2d(x: np.ndarray, z: np.ndarray) -> bool:
    A = np.column_stack([np.ones_like(x), x, z, x * x, z * z, x * z])
    return np.linalg.matrix_rank(A) == 6


def _line_optimum(v: np.ndarray, y: np.ndarray, other: np.ndarray) -> tuple[float, float] | None:
    """Vertex of a parabola of y in v, among the runs at the value of `other` that has the most distinct v."""
    values, counts = np.unique(other, return_counts=True)
    best_line, best_n = None, 0
    for val in values[counts >= 3]:
        on = np.isclose(other, val)
        n = len(np.unique(v[on]))
        if n > best_n:
            best_line, best_n = on, n
    if best_line is None or best_n < 3:
        return None
    vertex = _vertex_1d(v[best_line], y[best_line])
    if vertex is None or not _inside(vertex[0], v[best_line]):
        return None
    return vertex


def _inside(v: float, values: np.ndarray) -> bool:
    return values.min() - MAX_EXTRAPOLATION <= v <= values.max() + MAX_EXTRAPOLATION


def optimum_points(df: pd.DataFrame, group_cols: list[str], method: str = "quadratic") -> pd.DataFrame:
    """Points (group columns, lr, batch_tokens, loss) to fit hyperparameter laws through.

    quadratic: one point per group (its bowl's minimum). near-optimal: every near-optimal run."""
    kind, tol = parse_method(method)
    if kind == "near-optimal":
        near = near_optimal(df, group_cols, tol)
        return near.assign(note="near-optimal")
    rows = []
    for key, group in df.groupby(group_cols):
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(group_cols, key, strict=True)), **quadratic_optimum(group)})
    return pd.DataFrame(rows)
