"""Hyperparameter optima per budget (or per (N, D) group), with run-level resamples (ARCHITECTURE section 8).

Two ways to read a group's optimum:

- ``quadratic`` (default): the vertex of a quadratic of loss in (ln lr, ln batch), or in ln lr alone when the batch
  does not vary in the group. On small noisy sweeps the lowest-loss cell jumps between seeds (measured here:
  seed-to-seed spread 0.02-0.09 nats at 1e11-1e12 FLOPs, as large as the gap between neighbouring learning rates),
  while the fitted bowl's vertex is stable. A bowl that does not open upwards, or whose vertex lies more than
  MAX_EXTRAPOLATION outside the grid, falls back to the best run, with a note.
- ``near-optimal:TOL``: the published protocol of DeepSeek, Ling and Step-Law: every run whose loss is within TOL
  (default 0.25%) of its group's best is an optimum point; the laws are then fitted through all of them.

Uncertainty comes from the runs, not from the handful of optimum points: each group's bowl is refitted to its
fitted values plus resampled residuals (a residual bootstrap with leverage-adjusted residuals), and the vertex is
re-read per resample (`group_optima`). For near-optimal points the same resampled losses, at the runs' own
settings, give each resample's near-optimal set (`near_optimal_resamples`): the noise is resampled, not the lr
grid. The laws are refitted per resample. The bowls themselves are in `bowls.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from scaling.fit.bowls import design, optima_of_groups, window
from scaling.fit.uncertainty import MIN_RESAMPLES, percentile_interval, stream

GROUP_COLS = ["params", "tokens"]
"""A hyperparameter group: runs of one configuration at one model size and token count (one budget of one shape)."""
STRUCTURE_COLS = ("activation_ratio", "granularity", "experts", "top_k")
"""Columns that tell configurations of one size apart (two MoE shapes may share N): a group is keyed by each of
them that varies, never by N alone."""


def group_columns(df: pd.DataFrame) -> list[str]:
    """GROUP_COLS and every structure column that varies in `df`."""
    return GROUP_COLS + [c for c in STRUCTURE_COLS if c in df.columns and df[c].nunique(dropna=True) > 1]
DEFAULT_TOL = 0.0025
MIN_RESIDUAL_DOF = 5
"""A group whose bowl leaves fewer residual degrees of freedom (e.g. one seed of 5 learning rates: 2) borrows the
pooled residuals of every group, and their pooled degrees of freedom. Measured on synthetic one-seed sweeps: each
group on its own 2 dof gave intervals covering 100% (far too wide); pooled, 93-98%."""


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
        if not 0 <= value < 1:
            raise ValueError(f"--optimum {method!r}: TOL must be in [0, 1), e.g. near-optimal:0.0025")
        return "near-optimal", value
    raise ValueError(f"--optimum {method!r} is not 'quadratic' or 'near-optimal[:TOL]'")


def near_optimal(df: pd.DataFrame, group_cols: list[str], tol: float = DEFAULT_TOL) -> pd.DataFrame:
    """Rows whose loss is within `tol` (relative) of their group's best."""
    best = df.groupby(group_cols)["loss"].transform("min")
    return df[df["loss"] <= best * (1 + tol)]


@dataclass
class Optima:
    """Per-group optima (`groups`, one row per group) with aligned run-level resamples, and the points the laws
    are fitted through (`points`: the groups' optima, or every near-optimal run)."""

    groups: pd.DataFrame
    points: pd.DataFrame
    replicates: dict[str, np.ndarray] = field(default_factory=dict)
    """'lr', 'batch_tokens', 'loss' -> (n groups, R) resamples, rows aligned with `groups` (quadratic method)."""
    replicate_sets: list[pd.DataFrame] = field(default_factory=list)
    """near-optimal method: the near-optimal runs of each resample of the runs."""
    method: str = "quadratic"

    def interval(self, col: str, i: int, level: float = 0.95) -> list[float] | None:
        """The `level` interval of group i's `col` over its resamples (None with too few)."""
        rep = self.replicates.get(col)
        row = np.asarray(rep[i], float) if rep is not None else np.array([])
        row = row[np.isfinite(row)]
        return percentile_interval(row, level) if len(row) >= MIN_RESAMPLES else None

    def per_budget(self) -> tuple[pd.DataFrame, np.ndarray | None]:
        """Each budget's best group (an IsoFLOP budget has several): budget, C, loss, lr, n_runs; and the budgets'
        loss resamples (per resample, the lowest over the budget's groups), rows aligned."""
        g, rep = self.groups, self.replicates.get("loss")
        best = g.loc[g.groupby("budget")["loss"].idxmin()].sort_values("budget")
        reps = None
        if rep is not None:
            reps = np.array([np.nanmin(rep[np.flatnonzero(g["budget"].to_numpy() == b)], axis=0)
                             for b in best["budget"]])
        return best[["budget", "C", "loss", "lr", "n_runs"]].reset_index(drop=True), reps


def _cell_spread(group: pd.DataFrame) -> float | None:
    """Pooled standard deviation of the loss among runs of the same (lr, batch) cell (the seed-to-seed spread)."""
    g = group.groupby(["lr", "batch_tokens"])["loss"]
    n = g.count()
    if (n >= 2).sum() == 0:
        return None
    ss = g.var(ddof=1).fillna(0) * (n - 1)
    return float(np.sqrt(ss.sum() / (n - 1).clip(lower=0).sum()))


def group_optima(df: pd.DataFrame, group_cols: list[str], method: str = "quadratic", n_boot: int = 1000,
                 seed: int = 0, asymmetric: bool = True) -> Optima:
    """Each group's optimum lr, batch and loss, its diagnostics and its run-level resamples (`asymmetric`: False
    reads every lr line with a symmetric parabola, the alternative form the verdicts compare with)."""
    kind, tol = parse_method(method)
    rng = np.random.default_rng(seed)
    whole = [(key if isinstance(key, tuple) else (key,), group) for key, group in df.groupby(group_cols, sort=True)]
    parts = whole  # the runs each bowl is read from: near its best (bowls.window); near-optimal sets use every run
    if kind == "quadratic":
        parts = [(key, group[window(group["lr"], group["batch_tokens"], group["loss"])]) for key, group in whole]
    designs, ys = [], []
    for _, group in parts:
        x, z = np.log(group["lr"].to_numpy(float)), np.log(group["batch_tokens"].to_numpy(float))
        designs.append(design(x, z, _seeds(group), asymmetric))
        ys.append(group["loss"].to_numpy(float))
    found, ratio = optima_of_groups(designs, [y[:, None] for y in ys])
    groups, fits, resid = [], [], []
    for (key, group), (_, full), d, y, (lx, lz, loss, lr_ok) in zip(parts, whole, designs, ys, found, strict=True):
        x, z = d.x, d.z
        swept = np.log(full["lr"].to_numpy(float))  # the group's whole lr grid
        at = int(np.argmin(y))  # where the optimum is the best run, report that run's values exactly
        lr = float(np.exp(lx[0])) if lr_ok[0] else float(group["lr"].iloc[at])
        batch = float(np.exp(lz[0])) if not np.isclose(lz[0], z[at]) else float(group["batch_tokens"].iloc[at])
        row = {**dict(zip(group_cols, key, strict=True)), "lr": lr,
               "batch_tokens": batch, "loss": float(loss[0]), "n_runs": int(len(swept)),
               "n_lr": len(np.unique(swept)), "n_seeds": int(group.groupby(["lr", "batch_tokens"]).size().max()),
               "lr_min": float(np.exp(swept.min())), "lr_max": float(np.exp(swept.max()))}
        if len(y) < len(swept):
            row["bowl_lrs"] = len(np.unique(x))
        row["edge"] = ("below" if lx[0] < swept.min() else "above" if lx[0] > swept.max() else None) \
            if lr_ok[0] else ("below" if np.isclose(lx[0], swept.min()) else
                              "above" if np.isclose(lx[0], swept.max()) else "none")
        row["interior"] = bool(lr_ok[0] and row["edge"] is None)
        row["note"] = "" if lr_ok[0] else "lr: best run (no upward bowl inside the swept range)"
        if d.asymmetric is not None and ratio is not None and lr_ok[0]:
            row["bowl"] = "asymmetric"
            row["curvature_ratio"] = float(np.exp(ratio[0]))
        r, fitted, bowl = None, None, d.fitted(y, None if ratio is None or not lr_ok[0] else float(ratio[0]),
                                               float(lx[0]))
        if bowl is not None:
            fitted, model, dof = bowl
            # modified residuals (Davison & Hinkley 1997, 6.2): r_i / sqrt(1 - h_ii), centred, so the resampled
            # noise has the runs' variance even at the grid's edges, where the bowl pulls the fit towards them
            leverage = np.einsum("ij,ji->i", model, np.linalg.pinv(model))
            r = (y - fitted) / np.sqrt(np.clip(1 - leverage, 1e-6, None))
            r = r - r.mean()
            row["noise_sd"] = float(np.sqrt(np.sum((y - fitted) ** 2) / dof))
            row["resid_dof"] = dof
            if d.lr_line is not None:  # the bowl's depth one grid step from its vertex: what the noise must resolve
                c2 = np.polyfit(x[d.lr_line], y[d.lr_line], 2)[0]
                steps = np.diff(np.unique(x[d.lr_line]))
                row["step_gap"] = float(c2 * np.median(steps) ** 2) if c2 > 0 else 0.0
        row["seed_sd"] = _cell_spread(group)
        groups.append(row)
        fits.append(fitted)
        resid.append(r)
    table = pd.DataFrame(groups)
    out = Optima(groups=table, points=table, method=method)
    if kind == "near-optimal":
        out.points = near_optimal(df, group_cols, tol).assign(note="near-optimal")
    if n_boot <= 0 or all(r is None for r in resid):
        return out
    Ys = _resampled_losses(ys, fits, resid, groups, n_boot, rng)
    if kind == "near-optimal":
        out.replicate_sets = near_optimal_resamples(parts, Ys, group_cols, tol)
        return out
    reps = {k: np.full((len(groups), n_boot), np.nan) for k in ("lr", "batch_tokens", "loss")}
    for i, (lx, lz, loss, _) in enumerate(optima_of_groups(designs, Ys)[0]):
        if fits[i] is not None:  # every resample re-reads the shared asymmetry too
            reps["lr"][i], reps["batch_tokens"][i], reps["loss"][i] = np.exp(lx), np.exp(lz), loss
    out.replicates = reps
    return out


def _seeds(group: pd.DataFrame) -> np.ndarray | None:
    """The runs' seeds as numbers, or None when there is no usable seed column (a CSV may carry none, or text)."""
    if "seed" not in group.columns:
        return None
    seeds = pd.to_numeric(group["seed"], errors="coerce").to_numpy(float)
    return None if np.isnan(seeds).any() else seeds


def _resampled_losses(ys, fits, resid, groups, n_boot: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Per group, (runs, n_boot) losses: its bowl's fitted values plus resampled residuals (the runs as they are
    where there is no bowl)."""
    pooled = np.concatenate([r for r in resid if r is not None])
    pooled_dof = max(1, sum(g.get("resid_dof", 0) for g in groups))
    pooled_scale = np.sqrt(pooled_dof / rng.chisquare(pooled_dof, n_boot))
    Ys = []
    for i, (y, fitted, r) in enumerate(zip(ys, fits, resid, strict=True)):
        if fitted is None:
            Ys.append(np.repeat(y[:, None], n_boot, axis=1))  # no bowl to resample: its runs as they are
            continue
        own = groups[i].get("resid_dof", 0) >= MIN_RESIDUAL_DOF
        # The noise level itself is estimated from `dof` residuals: each resample draws it from its sampling
        # distribution (sigma^2 dof / chi2_dof), so intervals are t-like rather than z-like (measured on synthetic
        # sweeps: per-budget coverage 0.90 without this, at 10 runs per bowl). Groups on the pooled residuals share
        # one noise level, so they share its draw.
        source, scale = (r, np.sqrt(groups[i]["resid_dof"] / rng.chisquare(groups[i]["resid_dof"], n_boot))) \
            if own else (pooled, pooled_scale)
        Ys.append(fitted[:, None] + source[rng.integers(0, len(source), (len(y), n_boot))] * scale)
    return Ys


def near_optimal_resamples(parts: list, Ys: list[np.ndarray], group_cols: list[str],
                           tol: float) -> list[pd.DataFrame]:
    """Per resample: every group's runs at their own settings with resampled losses (`_resampled_losses`: the noise,
    not the design, is what is resampled; drawing runs with replacement would resample the lr grid), then their
    near-optimal set."""
    runs = pd.concat([group for _, group in parts])
    losses = np.concatenate(Ys, axis=0)
    return [near_optimal(runs.assign(loss=losses[:, k]), group_cols, tol) for k in range(losses.shape[1])]


def budget_optima(fam: pd.DataFrame, method: str = "quadratic", n_boot: int = 1000, seed: int = 0,
                  asymmetric: bool = True) -> Optima:
    """One family's optimum per budget (per (N, D) group), with its compute C (the runs' FLOPs under the chosen
    convention), its budget and the 95% intervals of lr, batch and loss."""
    if "batch_tokens" not in fam.columns or fam["batch_tokens"].isna().any():
        fam = fam.assign(batch_tokens=1.0)  # no batch axis: every run the same batch
    cols = group_columns(fam)
    opt = group_optima(fam, cols, method, n_boot=n_boot, seed=seed, asymmetric=asymmetric)
    by_group = fam.groupby(cols).agg(C=("flops", "median"), budget=("budget", "first"))
    keys = list(opt.groups[cols].itertuples(index=False, name=None))
    opt.groups["C"] = [float(by_group.loc[k, "C"]) for k in keys]
    opt.groups["budget"] = [float(by_group.loc[k, "budget"]) for k in keys]
    for col in ("lr", "batch_tokens", "loss"):
        ivs = [opt.interval(col, i) or [np.nan, np.nan] for i in range(len(opt.groups))]
        opt.groups[f"{col}_lo"], opt.groups[f"{col}_hi"] = [iv[0] for iv in ivs], [iv[1] for iv in ivs]
    if method == "quadratic":
        opt.points = opt.groups
    else:
        opt.points = opt.points.assign(C=[float(by_group.loc[k, "C"]) for k in
                                          opt.points[cols].itertuples(index=False, name=None)])
    return opt


def lr_grid_optima(df: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict[str, Optima]:
    """`budget_optima` (quadratic) of every family with an lr grid (>= 3 learning rates) at each of its budgets:
    computed once per fit, for the laws, the leverage and the structure readout alike."""
    if "lr" not in df.columns or df["lr"].isna().any():
        return {}
    return {str(f): budget_optima(g, "quadratic", n_boot, stream(seed, "optima", f))
            for f, g in df.groupby("family") if has_lr_grid(g)}


def has_lr_grid(fam: pd.DataFrame) -> bool:
    """Whether a family's runs read lr bowls: at least half its groups (one size and token count each) were trained
    at >= 3 learning rates. Learning rates that differ only between groups (an IsoFLOP sweep centred on an lr law,
    one lr per size) are no grid: the best of such runs is the lr it was given, not an optimum."""
    if "lr" not in fam.columns or fam["lr"].isna().any() or not len(fam):
        return False
    per_group = fam.groupby(group_columns(fam))["lr"].nunique()
    return bool((per_group >= 3).mean() >= 0.5)


def quadratic_optimum(group: pd.DataFrame) -> dict:
    """Optimal lr (and batch) of one group of runs: the fitted bowl's vertex, or the best run with a note."""
    opt = group_optima(group.assign(_g=0), ["_g"], n_boot=0).groups.iloc[0]
    return {k: opt[k] for k in ("lr", "batch_tokens", "loss", "n_runs", "note")}
