"""Figures of a fit (PNG and SVG), each drawn only when its data are there; `plot_all` returns the files written.

- ``lr_bowls``: loss against lr per budget, the runs (every seed), the fitted bowl, its vertex and the vertex's
  95% run-level interval: the figure that shows whether an lr sweep found its optimum.
- ``optima_vs_compute``: the optimum lr (and batch, when it was swept) per budget with intervals, the fitted law
  and its 95% band, extended to the judged budget.
- ``loss_vs_compute``: every run, each budget's bowl minimum with its interval, the loss law and its band.
- ``lr_batch_losses``: per budget, loss over the (lr, batch) grid (only when the batch was swept).
- ``isoflop``: IsoFLOP curves; ``leverage``: efficiency leverage with intervals, against A, G or compute.
- ``precision_gap``: the FP8 - base loss gap of every pair against compute, per configuration, its mean with the
  95% interval, and the gap law where there is one; beside it, the QKV gradient underflow of the FP8 runs.

Log axes use matplotlib's log locators and plain-text log formatters, which label minor ticks when an axis spans
less than a decade or two; every axis names its unit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from scaling.fit.report import FitReport, main_family

MAX_PANELS = 6
"""At most this many budgets get a panel in the per-budget figures (the first, the last and evenly between)."""
LOSS_LABEL = "validation loss (nats/token)"


def _minor_labels_only_when_narrow(fig) -> None:
    """Minor ticks (labelled) on log axes spanning under a decade only: on wider axes they say nothing and cost
    seconds of text layout per figure."""
    from matplotlib.ticker import NullLocator

    for ax in fig.axes:
        for axis, scale, lim in ((ax.xaxis, ax.get_xscale(), ax.get_xlim()), (ax.yaxis, ax.get_yscale(),
                                                                             ax.get_ylim())):
            if scale == "log" and min(lim) > 0 and np.log10(max(lim) / min(lim)) >= 1.0:
                axis.set_minor_locator(NullLocator())


def _save(fig, out: Path, name: str) -> list[Path]:
    import matplotlib.pyplot as plt

    from scaling import store

    _minor_labels_only_when_narrow(fig)
    paths = []
    for ext in ("png", "svg"):  # atomically, replacing (never writing through) whatever is at the path
        path = out / f"{name}.{ext}"
        store.atomic_write(path, lambda f, ext=ext: fig.savefig(f, format=ext, dpi=120, bbox_inches="tight"))
        paths.append(path)
    plt.close(fig)
    return paths


def _log(ax, x: bool = True, y: bool = False) -> None:
    """Log scale with matplotlib's log locators and plain-text log formatters (minor ticks labelled when the axis
    spans under about two decades, so a narrow axis keeps its labels)."""
    from matplotlib.ticker import LogFormatter, LogLocator

    for on, set_scale, axis in ((x, ax.set_xscale, ax.xaxis), (y, ax.set_yscale, ax.yaxis)):
        if on:
            set_scale("log")
            axis.set_major_locator(LogLocator(base=10))
            axis.set_minor_locator(LogLocator(base=10, subs=np.arange(2, 10)))
            axis.set_major_formatter(LogFormatter(labelOnlyBase=False))
            axis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))


def _pick(groups: list) -> list:
    if len(groups) <= MAX_PANELS:
        return groups
    keep = np.unique(np.linspace(0, len(groups) - 1, MAX_PANELS).round().astype(int))
    return [groups[i] for i in keep]


def _verdict(report: FitReport, law: str) -> str:
    v = (report.laws[law].verdict or {}).get("verdict") if law in report.laws else None
    return f" [{v}]" if v else ""


def _errorbars(ax, x, y, lo, hi, **kw) -> None:
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    ok = np.isfinite(lo) & np.isfinite(hi)
    y = np.asarray(y, float)
    x = np.asarray(x, float)
    if ok.any():
        ax.errorbar(x[ok], y[ok], yerr=[y[ok] - lo[ok], hi[ok] - y[ok]], fmt="o", capsize=3, **kw)
    if (~ok).any():
        ax.scatter(x[~ok], y[~ok], **{k: v for k, v in kw.items() if k in ("color", "label", "zorder")})


def _law_line(ax, report: FitReport, law: str, grid: np.ndarray, color: str) -> None:
    fit = report.laws.get(law)
    if fit is None:
        return
    band = fit.band(C=grid)
    centre = band[0] if band is not None else fit.evaluate(fit.params, C=grid)
    ax.plot(grid, centre, color=color, label=f"{fit.formula}{_verdict(report, law)}")
    if band is not None:
        ax.fill_between(grid, band[1], band[2], color=color, alpha=0.18, lw=0, label="95% band")
    lo, hi = fit.fitted_range.get("C", [grid[0], grid[-1]])
    ax.axvspan(hi, grid[-1], color="0.92", zorder=0, label="extrapolated")


def _grid(report: FitReport, fam: pd.DataFrame) -> np.ndarray:
    lo, hi = fam["flops"].min(), fam["flops"].max()
    judged = [(law.verdict or {}).get("judged_at", {}).get("C") for law in report.laws.values()]
    top = max([hi * 1.5] + [c * 1.2 for c in judged if c])
    return np.geomspace(lo / 1.5, top, 80)


def plot_lr_bowls(report: FitReport, fam: pd.DataFrame, out: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    o = report.optima
    groups = _pick(list(o.iterrows()))
    fig, axes = plt.subplots(1, len(groups), figsize=(3.4 * len(groups) + 0.6, 3.3), squeeze=False,
                             layout="constrained")
    for ax, (_, g) in zip(axes[0], groups, strict=True):
        runs = fam[(fam["params"] == g["params"]) & (fam["tokens"] == g["tokens"])]
        if "batch_tokens" in runs.columns and runs["batch_tokens"].nunique() > 1:  # the batch with the most lrs
            best_b = runs.groupby("batch_tokens")["lr"].nunique().idxmax()
            runs = runs[runs["batch_tokens"] == best_b]
        ax.scatter(runs["lr"], runs["loss"], s=14, color="0.45", label="runs (every seed)", zorder=3, rasterized=True)
        x = np.log(runs["lr"].to_numpy(float))
        if len(np.unique(x)) >= 3:
            c = np.polyfit(x, runs["loss"].to_numpy(float), 2)
            xs = np.linspace(x.min() - 0.3, x.max() + 0.3, 60)
            ax.plot(np.exp(xs), np.polyval(c, xs), color="C0", lw=1.2, label="fitted bowl")
        ax.scatter([g["lr"]], [g["loss"]], marker="*", s=90, color="C3", zorder=4, label="vertex (lr*)")
        if np.isfinite(g["lr_lo"]) and np.isfinite(g["lr_hi"]):
            ax.errorbar([g["lr"]], [g["loss"]], xerr=[[g["lr"] - g["lr_lo"]], [g["lr_hi"] - g["lr"]]], color="C3",
                        capsize=3, lw=1, label="lr* 95%")
        _log(ax)
        ax.set(xlabel="peak learning rate", title=f"C = {g['C']:.3g} FLOPs" + ("" if g["interior"] else " (edge)"))
    axes[0][0].set_ylabel(LOSS_LABEL)
    axes[0][0].legend(fontsize=6)
    return _save(fig, out, "lr_bowls")


def plot_optima(report: FitReport, fam: pd.DataFrame, out: Path, grid: np.ndarray) -> list[Path]:
    import matplotlib.pyplot as plt

    o = report.optima
    panels = [("lr", "lr_opt", "optimal peak learning rate")]
    if o["batch_tokens"].nunique() > 1:
        panels.append(("batch_tokens", "batch_opt", "optimal batch (tokens)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.6), squeeze=False, layout="constrained")
    for ax, (col, law, label) in zip(axes[0], panels, strict=True):
        if col in fam.columns:
            ax.scatter(fam["flops"], fam[col], s=8, color="0.8", label="runs", rasterized=True)
        _errorbars(ax, o["C"], o[col], o[f"{col}_lo"], o[f"{col}_hi"], color="C1", label="optimum (95%)", zorder=3)
        _law_line(ax, report, law, grid, "C1")
        _log(ax, y=True)
        ax.set(xlabel=f"compute C (FLOPs, {report.convention})", ylabel=label, title=law)
        ax.legend(fontsize=6)
    return _save(fig, out, "optima_vs_compute")


def plot_loss(report: FitReport, fam: pd.DataFrame, out: Path, grid: np.ndarray) -> list[Path]:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.8), layout="constrained")
    ax.scatter(fam["flops"], fam["loss"], s=8, color="0.75", label="runs", rasterized=True)
    if report.optima is not None:
        o = report.optima.loc[report.optima.groupby("budget")["loss"].idxmin()]
        _errorbars(ax, o["C"], o["loss"], o["loss_lo"], o["loss_hi"], color="C0", label="bowl minimum (95%)",
                   zorder=3)
    else:
        best = fam.loc[fam.groupby("budget")["loss"].idxmin()]
        ax.scatter(best["flops"], best["loss"], s=25, color="C0", label="best per budget", zorder=3)
    _law_line(ax, report, "loss_vs_compute", grid, "C0")
    _log(ax)
    floor = fam["loss"].min()
    if "loss_vs_compute" in report.laws:  # keep the law's extrapolated part in view
        floor = min(floor, report.laws["loss_vs_compute"].value(C=grid[-1]))
    ax.set_ylim(floor * 0.95, fam["loss"].quantile(0.98) * 1.05)
    ax.set(xlabel=f"compute C (FLOPs, {report.convention})", ylabel=LOSS_LABEL, title="loss vs compute")
    ax.legend(fontsize=6)
    return _save(fig, out, "loss_vs_compute")


def plot_lr_batch(fam: pd.DataFrame, out: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    groups = _pick(list(fam.groupby("budget")))
    fig, axes = plt.subplots(1, len(groups), figsize=(3 * len(groups) + 1, 3), squeeze=False, layout="constrained")
    sc = None
    for ax, (budget, g) in zip(axes[0], groups, strict=True):
        rel = g["loss"] / g["loss"].min() - 1  # loss above the budget's best, so one colour scale fits all
        sc = ax.scatter(g["lr"], g["batch_tokens"], c=rel, cmap="viridis_r", s=40, rasterized=True,
                        vmin=0, vmax=max(0.02, float(rel.quantile(0.9))))
        _log(ax, y=True)
        ax.set(xlabel="peak learning rate", ylabel="batch (tokens)", title=f"C = {budget:.3g} FLOPs")
    fig.colorbar(sc, ax=axes[0].tolist(), label="loss / best - 1")
    return _save(fig, out, "lr_batch_losses")


def plot_isoflop(fam: pd.DataFrame, out: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    iso = fam.groupby(["budget", "params"])["loss"].min().reset_index()
    fig, ax = plt.subplots(figsize=(5, 3.6), layout="constrained")
    for i, (budget, g) in enumerate(iso.groupby("budget")):
        if g["params"].nunique() < 3:
            continue
        x = np.log(g["params"])
        c = np.polyfit(x, g["loss"], 2)
        xs = np.linspace(x.min(), x.max(), 50)
        ax.scatter(g["params"], g["loss"], s=15, color=f"C{i % 10}")
        ax.plot(np.exp(xs), np.polyval(c, xs), color=f"C{i % 10}", label=f"C = {budget:.2g}")
    _log(ax)
    ax.set(xlabel="active non-embedding parameters N", ylabel=LOSS_LABEL, title="IsoFLOP curves")
    ax.legend(fontsize=7)
    return _save(fig, out, "isoflop")


def plot_leverage(report: FitReport, out: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    lev = report.leverage
    cols = [c for c in ("activation_ratio", "granularity") if lev[c].nunique() > 1]
    panels = cols or ["C"]  # one MoE configuration: EL against compute
    labels = {"activation_ratio": "activation ratio A", "granularity": "granularity G (2 d_model / d_expert)",
              "C": f"compute C (FLOPs, {report.convention})"}
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.6), squeeze=False, layout="constrained")
    for ax, col in zip(axes[0], panels, strict=True):
        series = lev.groupby("family") if col == "C" else lev.groupby("budget")
        for i, (key, g) in enumerate(series):
            g = g.sort_values(col)
            label = str(key) if col == "C" else f"C = {key:.2g}"
            _errorbars(ax, g[col], g["el"], g["el_lo"], g["el_hi"], color=f"C{i % 10}", label=label)
            ax.plot(g[col], g["el"], color=f"C{i % 10}", lw=0.8)
        ax.axhline(1.0, color="0.5", lw=0.8, ls="--", label="EL = 1 (dense)")
        _log(ax)
        ax.set(xlabel=labels[col], ylabel="efficiency leverage C_dense / C_moe", title="leverage (95% intervals)")
        ax.legend(fontsize=6)
    return _save(fig, out, "leverage")


def plot_precision_gap(report: FitReport, out: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    pairs, table = report.precision_pairs, report.precision.set_index("configuration")
    fig, (ax, ax_u) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    for i, (config, g) in enumerate(pairs.groupby("configuration", sort=True)):
        color, row = f"C{i % 10}", table.loc[config]
        ax.scatter(g["C"], g["gap"], color=color, s=14, label=f"{config}: pairs")
        lo, hi = row["gap_lo"], row["gap_hi"]
        if lo is not None and lo == lo:
            ax.axhspan(lo, hi, color=color, alpha=0.12, lw=0, label=f"mean {row['mean_gap']:+.3g}, 95% interval")
        if isinstance(row["law"], str) and row["law"] in report.laws:
            law = report.laws[row["law"]]
            grid = np.geomspace(g["C"].min() / 1.5, g["C"].max() * 1.5, 60)
            sign = -1.0 if row["verdict"] == "fp8 better" else 1.0
            ax.plot(grid, sign * law.evaluate(law.params, C=grid), color=color,
                    label=f"{'-' if sign < 0 else ''}{law.formula}{_verdict(report, row['law'])}")
        under = g.groupby("C")["qkv_grad_underflow"].mean()
        if under.notna().any():
            ax_u.plot(under.index, 100 * under.to_numpy(float), "o-", color=color, label=config)
    ax.axhline(0.0, color="0.5", lw=0.8, ls="--")
    _log(ax)
    ax.set(xlabel=f"compute C (FLOPs, {report.convention})", ylabel="loss gap fp8 - base (nats/token)",
           title="FP8 loss gap, paired runs")
    ax.legend(fontsize=6)
    _log(ax_u)
    ax_u.set(xlabel=f"compute C (FLOPs, {report.convention})", ylabel="QKV output gradients underflowing (%)",
             title="FP8 runs' QKV gradient underflow (peak over training)")
    if ax_u.lines:
        ax_u.legend(fontsize=6)
    return _save(fig, out, "precision_gap")


def plot_all(report: FitReport, runs: pd.DataFrame, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    written: list[Path] = []
    fam = runs[runs["family"] == (report.family or main_family(runs))]
    grid = _grid(report, fam)
    if report.optima is not None and not report.optima.empty:
        written += plot_lr_bowls(report, fam, out)
        written += plot_optima(report, fam, out, grid)
    written += plot_loss(report, fam, out, grid)
    if {"lr", "batch_tokens"} <= set(fam.columns) and fam[["lr", "batch_tokens"]].notna().all().all() and \
            fam["batch_tokens"].nunique() > 1 and fam["lr"].nunique() > 1:
        written += plot_lr_batch(fam, out)
    if "n_opt" in report.laws:
        written += plot_isoflop(fam, out)
    if report.leverage is not None and not report.leverage.empty:
        written += plot_leverage(report, out)
    if report.precision is not None and not report.precision.empty:
        written += plot_precision_gap(report, out)
    return written


def plot_verification(law, table: pd.DataFrame, out: Path, name: str = "verification") -> list[Path]:
    """The wind tunnel's figure: the loss law's points (what it was fitted to), the law and its 95% band from the
    smallest of them to past the checked budgets, and at each checked budget the prediction (95%) beside the
    measured loss (its own 95% where it has one)."""
    import matplotlib.pyplot as plt

    points = (law.diagnostics or {}).get("points") or {}
    checked = table.dropna(subset=["loss_predicted"]) if "loss_predicted" in table.columns else table.iloc[:0]
    if not points or not len(checked):
        return []
    C_pts, L_pts = np.asarray(points["C"], float), np.asarray(points["loss"], float)
    hi_C = max(C_pts.max(), float(checked["C"].max())) * 1.5
    grid = np.geomspace(C_pts.min() / 1.3, hi_C, 60)
    preds = [law.predict(C=c) for c in grid]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(grid, [p.value for p in preds], color="C0", label=f"loss law ({law.formula})")
    if all(p.interval is not None for p in preds):
        ax.fill_between(grid, [p.interval[0] for p in preds], [p.interval[1] for p in preds], color="C0",
                        alpha=0.15, label="95% band")
    ax.axvspan(C_pts.min(), C_pts.max(), color="0.9", zorder=0, label="fitted range")
    ax.plot(C_pts, L_pts, "o", color="k", label=f"the {len(C_pts)} budgets fitted")
    for _, r in checked.iterrows():
        _errorbars(ax, [r["C"] / 1.04], [r["loss_predicted"]], [r.get("loss_predicted_lo")],
                   [r.get("loss_predicted_hi")], color="C0")
        _errorbars(ax, [r["C"] * 1.04], [r["loss_measured"]], [r.get("loss_measured_lo")],
                   [r.get("loss_measured_hi")], color="C3")
        ax.annotate(f"predicted {r['loss_predicted']:.3f}\nmeasured {r['loss_measured']:.3f}",
                    (r["C"], r["loss_measured"]), textcoords="offset points", xytext=(8, 12), fontsize=8)
    ax.plot([], [], "o", color="C0", label="prediction (95%), left")
    ax.plot([], [], "o", color="C3", label="measured (95%), right")
    _log(ax, x=True, y=False)
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel(LOSS_LABEL)
    ax.set_title("loss predicted beyond the fitted budgets, and measured there")
    ax.legend(fontsize=7, loc="upper right")
    return _save(fig, out, name)

