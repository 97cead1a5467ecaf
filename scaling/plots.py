"""Figures of a fit (PNG and SVG): loss vs compute, lr and batch optima vs compute, per-budget lr x batch losses,
IsoFLOP curves, efficiency leverage. Each is drawn only when its data are there; returns the files written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from scaling.fit.report import FitReport, main_family

MAX_PANELS = 6
"""At most this many budgets get a panel in the per-budget lr x batch figure."""


def _save(fig, out: Path, name: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "svg"):
        path = out / f"{name}.{ext}"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        paths.append(path)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return paths


def _style(ax, xlog: bool = True, ylog: bool = False, **labels) -> None:
    """Log axes with plain-text tick labels (matplotlib's default log labels are mathtext, parsed one by one:
    seconds per figure with many panels), minor labels off."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set(**labels)
    for axis, log in ((ax.xaxis, xlog), (ax.yaxis, ylog)):
        if log:
            axis.set_major_locator(LogLocator(base=10))
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0e}".replace("e+0", "e").replace("e-0", "e-")))
            axis.set_minor_formatter(NullFormatter())


def _band(ax, fit, C_grid, fn, color):
    lo, hi = [], []
    for C in C_grid:
        _, interval = fit.predict(lambda p, C=C: fn(p, C))
        if interval is None:
            return
        lo.append(interval[0])
        hi.append(interval[1])
    ax.fill_between(C_grid, lo, hi, color=color, alpha=0.2, lw=0, label="95% band")


def plot_all(report: FitReport, runs: pd.DataFrame, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    fam = runs[runs["family"] == main_family(runs)]
    C_grid = np.geomspace(fam["budget"].min() / 1.5, fam["budget"].max() * 3, 60)

    # loss vs compute
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.scatter(fam["budget"], fam["loss"], s=10, color="0.6", label="runs", rasterized=True)
    best = fam.groupby("budget")["loss"].min()
    ax.scatter(best.index, best.values, s=25, color="C0", label="best per budget")
    if "loss_vs_compute" in report.laws:
        fit = report.laws["loss_vs_compute"]

        def loss_fn(p, C):
            return p["E"] + p["A"] * C ** -p["alpha"]

        ax.plot(C_grid, [loss_fn(fit.params, C) for C in C_grid], color="C0", label=fit.formula)
        _band(ax, fit, C_grid, loss_fn, "C0")
    ax.set_xscale("log")
    _style(ax, xlabel="compute C (FLOPs)", ylabel="loss", title="loss vs compute")
    ax.legend(fontsize=7)
    written += _save(fig, out, "loss_vs_compute")

    # hyperparameter optima vs compute
    if report.optima is not None and not report.optima.empty:
        budgets = fam.groupby(["params", "tokens"])["budget"].first()
        opt = report.optima.assign(budget=[budgets[(p, t)] for p, t in zip(report.optima["params"],
                                                                            report.optima["tokens"], strict=True)])
        panels = [(c, law) for c, law in (("lr", "lr_opt"), ("batch_tokens", "batch_opt")) if c in fam.columns]
        fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
        for ax, (col, law) in zip(axes[0], panels, strict=True):
            ax.scatter(fam["budget"], fam[col], s=8, color="0.75", label="runs", rasterized=True)
            ax.scatter(opt["budget"], opt[col], s=25, color="C1", label="optimum")
            if law in report.laws:
                fit = report.laws[law]

                def power(p, C):
                    return p["a"] * C ** p["b"]

                ax.plot(C_grid, [power(fit.params, C) for C in C_grid], color="C1",
                        label=f"{fit.params['a']:.3g} C^{fit.params['b']:.3f}")
                _band(ax, fit, C_grid, power, "C1")
            ax.set_xscale("log")
            ax.set_yscale("log")
            _style(ax, ylog=True, xlabel="compute C (FLOPs)", ylabel=col, title=law)
            ax.legend(fontsize=7)
        written += _save(fig, out, "optima_vs_compute")

    # per-budget lr x batch losses
    if {"lr", "batch_tokens"} <= set(fam.columns) and fam[["lr", "batch_tokens"]].notna().all().all():
        groups = list(fam.groupby("budget"))
        if len(groups) > MAX_PANELS:  # the first, the last and evenly spaced ones between
            keep = np.unique(np.linspace(0, len(groups) - 1, MAX_PANELS).round().astype(int))
            groups = [groups[i] for i in keep]
        fig, axes = plt.subplots(1, len(groups), figsize=(3 * len(groups) + 1, 3), squeeze=False,
                                 layout="constrained")
        for ax, (budget, g) in zip(axes[0], groups, strict=True):
            rel = g["loss"] / g["loss"].min() - 1  # loss above the budget's best, so one colour scale fits all
            sc = ax.scatter(g["lr"], g["batch_tokens"], c=rel, cmap="viridis_r", s=40, rasterized=True,
                            vmin=0, vmax=max(0.02, float(rel.quantile(0.9))))
            ax.set_xscale("log")
            ax.set_yscale("log")
            _style(ax, ylog=True, xlabel="lr", ylabel="batch (tokens)", title=f"C = {budget:.2g}")
        fig.colorbar(sc, ax=axes[0].tolist(), label="loss / best - 1")
        written += _save(fig, out, "lr_batch_losses")

    # IsoFLOP curves
    iso = fam.groupby(["budget", "params"])["loss"].min().reset_index()
    if "n_opt" in report.laws:
        fig, ax = plt.subplots(figsize=(5, 3.6))
        for i, (budget, g) in enumerate(iso.groupby("budget")):
            if g["params"].nunique() < 3:
                continue
            x = np.log(g["params"])
            c = np.polyfit(x, g["loss"], 2)
            xs = np.linspace(x.min(), x.max(), 50)
            ax.scatter(g["params"], g["loss"], s=15, color=f"C{i % 10}")
            ax.plot(np.exp(xs), np.polyval(c, xs), color=f"C{i % 10}", label=f"C = {budget:.2g}")
        ax.set_xscale("log")
        _style(ax, xlabel="params N", ylabel="loss", title="IsoFLOP curves")
        ax.legend(fontsize=7)
        written += _save(fig, out, "isoflop")

    # efficiency leverage
    if report.leverage is not None and not report.leverage.empty:
        lev = report.leverage
        cols = [c for c in ("activation_ratio", "granularity") if lev[c].nunique() > 1] or ["activation_ratio"]
        fig, axes = plt.subplots(1, len(cols), figsize=(4.5 * len(cols), 3.6), squeeze=False)
        for ax, col in zip(axes[0], cols, strict=True):
            for i, (budget, g) in enumerate(lev.groupby("budget")):
                g = g.sort_values(col)
                ax.plot(g[col], g["el"], "o-", color=f"C{i % 10}", label=f"C = {budget:.2g}")
            ax.axhline(1.0, color="0.5", lw=0.8, ls="--")
            ax.set_xscale("log")
            _style(ax, xlabel=col, ylabel="efficiency leverage", title=f"EL vs {col}")
            ax.legend(fontsize=7)
        written += _save(fig, out, "leverage")
    return written
