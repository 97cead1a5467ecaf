"""Replications of published scaling-law fits with `scaling.fit`, on analysis/reference (data nobody here made).

Prints ours next to the published numbers:
  1. Step-Law dense lr / batch laws (their near-optimal protocol) on their released dense file;
  2. Step-Law MoE file: do the lr and batch optima depend on the activation ratio (Ling says they barely do)?
  3. Epoch AI's Chinchilla approach-3 refit (Huber on log loss, grid of starts);
  4. IsoFLOP approach 2 (N_opt ~ C^a, D_opt ~ C^b) on the Epoch Chinchilla, Marin and (Mis)fitting runs.

    python analysis/replicate_published.py [--reference analysis/reference]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from scaling.fit.inputs import from_csv
from scaling.fit.loss_laws import fit_chinchilla, fit_isoflop_laws
from scaling.fit.optima import near_optimal
from scaling.fit.report import fit_all


def steplaw_dense(ref: Path) -> None:
    runs = from_csv(ref / "steplaw" / "dense_lr_bs_loss.csv",
                    {"N": "params", "D": "tokens", "smooth loss": "loss", "bs": "batch"}, seq_len=2048)
    report = fit_all(runs, optimum="near-optimal", n_boot=1000, check=False)
    lr, bs = report.laws["lr_opt_nd"].params, report.laws["batch_opt_d"].params
    print("1. Step-Law dense, near-optimal (0.25%) protocol, 17 (N, D) groups of the released file")
    print(f"   {'':34s} {'lr: a':>8s} {'N^b':>8s} {'D^c':>8s} {'B: a':>8s} {'D^b':>8s}")
    print(f"   {'ours':34s} {lr['a']:8.3g} {lr['b']:8.3f} {lr['c']:8.3f} {bs['a']:8.3g} {bs['b']:8.3f}")
    print(f"   {'their protocol on this file':34s} {77.7:8.3g} {-0.766:8.3f} {0.197:8.3f} {0.209:8.3g} {0.613:8.3f}")
    print(f"   {'paper (all their runs)':34s} {1.79:8.3g} {-0.713:8.3f} {0.307:8.3f} {0.58:8.3g} {0.571:8.3f}")
    iv, ib = report.laws["lr_opt_nd"].interval, report.laws["batch_opt_d"].interval

    def fmt(i):
        return f"[{i[0]:.3f}, {i[1]:.3f}]"

    print(f"   95% bootstrap intervals (ours): lr N^b {fmt(iv['b'])}, lr D^c {fmt(iv['c'])}, B D^b {fmt(ib['b'])}")


def steplaw_moe(ref: Path) -> None:
    df = pd.read_csv(ref / "steplaw" / "moe_lr_bs_loss.csv")
    df = df.assign(loss=df["smooth loss"], batch_tokens=df["bs"] * df["seq_len"], A=df["Na/N"].round(3))
    near = near_optimal(df, ["moe_name", "D"], 0.0025)
    table = near.groupby(["A", "D"]).apply(
        lambda g: pd.Series({"lr": np.exp(np.log(g["lr"]).mean()), "batch": np.exp(np.log(g["batch_tokens"]).mean())}),
        include_groups=False).reset_index()
    print("\n2. Step-Law MoE file (N = 2.15e9 total): near-optimal (0.25%) lr and batch (geometric means) per "
          "activation ratio A and tokens D")
    lr = table.pivot(index="A", columns="D", values="lr")
    batch = table.pivot(index="A", columns="D", values="batch")
    print("   lr_opt:\n" + "\n".join("   " + line for line in lr.map(lambda v: f"{v:.2e}").to_string().splitlines()))
    print("   batch_opt (tokens):\n" + "\n".join("   " + line for line in
                                              batch.map(lambda v: f"{v:.3g}").to_string().splitlines()))
    spread = (np.log(lr.max()) - np.log(lr.min())).mean()
    trend = np.polyfit(np.log(lr.index.to_numpy(float)), np.log(lr.to_numpy()).mean(axis=1), 1)[0]
    print(f"   across A (x{lr.index.max() / lr.index.min():.1f}) the lr optimum spans x{np.exp(spread):.2f} on "
          f"average per D; d ln lr / d ln A = {trend:.2f} (0 = independent of A, as Ling reports)")


def epoch_chinchilla(ref: Path) -> None:
    df = pd.read_csv(ref / "chinchilla" / "svg_extracted_data.csv")
    N = df["Model Size"].to_numpy(float)
    D = df["Training FLOP"].to_numpy(float) / (6 * N)
    keep = np.argsort(D / N)[5:]  # Besiroglu et al. drop the five runs with the fewest tokens per parameter
    fit = fit_chinchilla(N[keep], D[keep], df["loss"].to_numpy(float)[keep])
    p = fit.params
    print("\n3. Chinchilla approach 3 on Epoch AI's extraction (240 runs)")
    print(f"   {'':26s} {'E':>7s} {'A':>8s} {'B':>8s} {'alpha':>7s} {'beta':>7s}")
    print(f"   {'ours':26s} {p['E']:7.3f} {p['A']:8.1f} {p['B']:8.1f} {p['alpha']:7.4f} {p['beta']:7.4f}")
    print(f"   {'Epoch AI (Besiroglu 2024)':26s} {1.82:7.3f} {482.01:8.1f} {2085.43:8.1f} {0.3478:7.4f} {0.3658:7.4f}")
    print(f"   {'Chinchilla Table A3':26s} {1.69:7.3f} {406.4:8.1f} {410.7:8.1f} {0.34:7.4f} {0.28:7.4f}")


def isoflops(ref: Path) -> None:
    print("\n4. IsoFLOP approach 2: a parabola of loss in ln N per budget, then N_opt = a C^b, D_opt = a C^b")
    print(f"   {'experiment':44s} {'budgets':>7s} {'N_opt b':>8s} {'D_opt b':>8s} {'sum':>6s}")
    for name in ("epochai_chinchilla", "marin_202603", "misfitting"):
        df = pd.read_csv(ref / "isoflops" / f"{name}.csv")
        for experiment, g in df.groupby("experiment"):
            try:
                n_fit, d_fit, opt = fit_isoflop_laws(g[["budget", "params", "tokens", "loss"]], n_boot=200)
            except ValueError as e:
                print(f"   {experiment:44s} not fitted: {e}")
                continue
            nb, db = n_fit.params["b"], d_fit.params["b"]
            print(f"   {experiment:44s} {len(opt):7d} {nb:8.3f} {db:8.3f} {nb + db:6.3f}")
    print("   (Chinchilla's own approach 2: N_opt ~ C^0.49, D_opt ~ C^0.51)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reference", type=Path, default=Path(__file__).resolve().parent / "reference")
    ref = parser.parse_args().reference
    if not ref.is_dir():
        raise SystemExit(f"reference data not found at {ref}: pass --reference PATH")
    steplaw_dense(ref)
    steplaw_moe(ref)
    epoch_chinchilla(ref)
    isoflops(ref)


if __name__ == "__main__":
    main()
