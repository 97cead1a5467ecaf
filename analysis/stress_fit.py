"""The fitter on data it did not generate: coverage of its 95% intervals, and how often it calls a law reliable,
on synthetic sweeps drawn from generators that are not its model (scaling/fit/generators.py).

    .venv/bin/python analysis/stress_fit.py [N]      # N sweeps per row (default 100)

Rows (each N sweeps, 3 budgets x 5 lr x 2 seeds unless said):
- lr at 3x the largest budget: predicted/true (median), 95% interval covers, judged reliable; for asymmetric bowls
  (curvature above lr* over below it: 1, 2, 3, 14), a smooth exponential bowl, heteroscedastic noise with per-seed
  offsets, and one seed at 4 budgets;
- loss at 3x and 10x for E + A C^-alpha from its points alone (6 and 8 budgets, 0.2-0.5% noise);
- efficiency leverage of an MoE family against a dense one, two independent lr sweeps of 4 budgets each.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from scaling.fit import leverage as lev
from scaling.fit.generators import leverage_sweep, lr_sweep, true_el, true_lr
from scaling.fit.inputs import Runs
from scaling.fit.loss_laws import fit_loss_vs_compute
from scaling.fit.report import fit_all

LR_ROWS = [dict(ratio=1), dict(ratio=2), dict(ratio=3), dict(ratio=14), dict(ratio=3, form="exp"),
           dict(ratio=3, hetero=1.0, seed_offset=0.05), dict(ratio=1, seeds=1, budgets=(1e11, 2e11, 5e11, 1e12))]


def lr_row(n: int, **kw) -> dict:
    """Over n sweeps: the lr law's prediction at 3x the largest budget against the truth."""
    ratios, covers, reliable = [], 0, 0
    for i in range(n):
        law = fit_all(Runs(df=lr_sweep(i, **kw), source="generated"), n_boot=1000, seed=i, check=False,
                      only=("lr_opt",)).laws["lr_opt"]
        C = 3 * max(kw.get("budgets", (1e12,)))
        p, truth = law.predict(C=C), float(true_lr(C))
        ratios.append(p.value / truth)
        covers += p.interval[0] <= truth <= p.interval[1]
        reliable += law.verdict["verdict"] == "reliable"
    return {"median predicted/true": float(np.median(ratios)), "covers": covers / n, "reliable": reliable / n}


def loss_row(n: int, budgets: int, noise=(0.002, 0.005), E=1.7, A=1.9e5, alpha=0.3) -> dict:
    """Over n sets of `budgets` points of E + A C^-alpha (C from 1e17 to 1e20) with log-normal noise: coverage of
    the prediction at 3x and 10x the largest budget."""
    hits = {3: 0, 10: 0}
    for i in range(n):
        rng = np.random.default_rng(i)
        C = np.geomspace(1e17, 1e20, budgets)
        L = (E + A * C**-alpha) * np.exp(rng.normal(0, rng.uniform(*noise), budgets))
        law = fit_loss_vs_compute(C, L, seed=i)
        for f in hits:
            lo, hi = law.predict(C=f * C[-1]).interval
            hits[f] += lo <= E + A * (f * C[-1]) ** -alpha <= hi
    return {f"covers at {f}x": v / n for f, v in hits.items()}


def leverage_row(n: int) -> dict:
    """Over n pairs of independent dense and MoE sweeps: coverage of the EL interval at the largest budget."""
    covers = 0
    for i in range(n):
        table = lev.leverage_table(leverage_sweep(i), n_boot=1000, seed=i)
        r = table.iloc[-1]
        covers += r["el_lo"] <= float(true_el(r["C"])) <= r["el_hi"]
    return {"covers": covers / n}


def main(n: int) -> None:
    start = time.time()
    for kw in LR_ROWS:
        print(f"lr  {kw}: {lr_row(n, **kw)}", flush=True)
    for budgets in (6, 8):
        print(f"loss, {budgets} budgets: {loss_row(n, budgets)}", flush=True)
    print(f"leverage: {leverage_row(n)}", flush=True)
    print(f"({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
