"""What a wind tunnel's loss prediction needs on the CPU: simulated wind tunnels with the noise measured there.

`make wind-tunnel` fits E + A C^-alpha through five rungs (each an lr bowl's minimum) and predicts a rung 3x
beyond. How close can that prediction be, given how noisy one run's final loss is at these sizes? This script
draws many wind tunnels from a known envelope, each run's loss = envelope + lr bowl + noise, fits them with the
fitter itself (`fit_all`: bowls, run-level bootstrap, the loss law and its 95% interval), and reports per design
how far the prediction lands from the truth and from the check's own measurement, how often the interval covers,
and the training compute and minutes the design costs. Numbers, not assumptions, set the defaults:

- noise: the final held-out loss of one run scatters with sd SIGMA0 at 1e11 FLOPs, falling as C^-GAMMA. Measured
  on the embedded corpus, 2 cores: twelve runs of d16 at 1e11 (seeds 0-5, two schedules or worker counts each)
  spread 2.048-2.246, sd 0.065; the same config under one and two workers differed by up to 0.07 (the run is chaotic:
  the float order of two threads against one changes the outcome as much as the seed does); six d24 runs at 8e11
  (seeds, lr within x1.3) spread 1.464-1.539, sd 0.025. GAMMA = ln(0.065 / 0.025) / ln 8.
- the envelope: E + A C^-alpha through the best measured losses at 1e11, 2e11, 4e11, 8e11 and 2.4e12 (2.10, 1.85,
  1.63, 1.47, 1.29).
- the lr bowl: loss + K ln(lr / lr*)^2 with K = 0.06 (a rung's x0.5 and x2 runs sat 0.01-0.08 above its best); the
  lr law misses lr* by a lognormal factor of sd LR_MISS (the lr law held to x1.4 at the check).
- minutes: FLOPs / (THROUGHPUT x 2 workers), the throughput measured over the wind tunnel's own stages.

Run: `.venv/bin/python analysis/wind_tunnel_noise.py [--sims 200]` (about 0.7 s per simulated fit).
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import pandas as pd

from scaling.fit.inputs import Runs
from scaling.fit.report import fit_all

SIGMA0, GAMMA = 0.065, math.log(0.065 / 0.025) / math.log(8)
ENVELOPE = {"E": 0.9106, "A": 11493.7, "alpha": 0.3621}
"""fit_loss_vs_compute through (1e11, 2.10), (2e11, 1.85), (4e11, 1.63), (8e11, 1.47), (2.4e12, 1.29)."""
K_BOWL, LR_MISS = 0.06, math.log(1.4)
THROUGHPUT = 1.6e10
"""FLOPs per second per worker over the wind tunnel's stages on 2 cores (two workers at once)."""
N_OPT = (8e3, 0.55)
"""N_opt = 8e3 (C / 1e11)^0.55 (stage 2's allocation law, rounded): only the records' size column needs it."""

DESIGNS = {
    "make wind-tunnel (5 rungs 1e11-8e11, lr x0.5/x1/x1/x2, check 2.4e12)":
        dict(rungs=(1e11, 1.68e11, 2.83e11, 4.76e11, 8e11), centre_seeds=2, check=2.4e12, check_seeds=2),
    "the same, 4 seeds at each bowl's centre":
        dict(rungs=(1e11, 1.68e11, 2.83e11, 4.76e11, 8e11), centre_seeds=4, check=2.4e12, check_seeds=2),
    "the same, 8 seeds at each bowl's centre":
        dict(rungs=(1e11, 1.68e11, 2.83e11, 4.76e11, 8e11), centre_seeds=8, check=2.4e12, check_seeds=2),
    "5 rungs 4e11-3.2e12, 4 seeds at the centre, check 9.6e12":
        dict(rungs=(4e11, 6.73e11, 1.13e12, 1.9e12, 3.2e12), centre_seeds=4, check=9.6e12, check_seeds=2),
}


def envelope(C):
    return ENVELOPE["E"] + ENVELOPE["A"] * np.asarray(C, float) ** -ENVELOPE["alpha"]


def sigma(C):
    return SIGMA0 * (np.asarray(C, float) / 1e11) ** -GAMMA


def bowl_runs(rng, C: float, centre_seeds: int) -> list[dict]:
    """One rung: lr law x0.5, x1 (centre_seeds seeds) and x2 around an lr* the law misses by LR_MISS."""
    miss = rng.normal(0, LR_MISS)
    N = N_OPT[0] * (C / 1e11) ** N_OPT[1]
    rows = []
    for factor, seeds in ((0.5, 1), (1.0, centre_seeds), (2.0, 1)):
        for seed in range(seeds):
            loss = envelope(C) + K_BOWL * (math.log(factor) + miss) ** 2 + rng.normal(0, sigma(C))
            rows.append({"budget": C, "flops": C, "params": N, "tokens": C / (6 * N), "seed": seed,
                         "lr": 0.01 * factor, "family": "A0.25-G1", "loss": loss})
    return rows


def measured_minimum(rows: list[dict]) -> float:
    """The check's measured loss as `scaling verify` reads a bowl: the vertex of a parabola in ln lr (the best run
    when the parabola has no minimum inside the lrs tried)."""
    x = np.log([r["lr"] for r in rows])
    y = np.array([r["loss"] for r in rows])
    c2, c1, c0 = np.polyfit(x, y, 2)
    if c2 <= 0 or not x.min() <= -c1 / (2 * c2) <= x.max():
        return float(y.min())
    return float(c0 - c1**2 / (4 * c2))


def simulate(design: dict, sims: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    err_truth, err_measured, covered, inside = [], [], 0, 0
    for i in range(sims):
        rows = [r for C in design["rungs"] for r in bowl_runs(rng, C, design["centre_seeds"])]
        report = fit_all(Runs(df=pd.DataFrame(rows), source="simulated"), n_boot=200, seed=i, check=False,
                         only=("loss_vs_compute",))
        law = report.laws.get("loss_vs_compute")
        if law is None:
            continue
        p = law.predict(C=design["check"])
        truth = float(envelope(design["check"]))
        measured = measured_minimum(bowl_runs(rng, design["check"], design["check_seeds"]))
        err_truth.append(p.value - truth)
        err_measured.append(p.value - measured)
        covered += p.interval[0] <= truth <= p.interval[1]
        inside += p.interval[0] <= measured <= p.interval[1]
    n = len(err_truth)
    runs_per_rung = 2 + design["centre_seeds"]
    flops = sum(design["rungs"]) * runs_per_rung + design["check"] * (2 + design["check_seeds"])
    return {"fits": n, "mean pred - truth": float(np.mean(err_truth)),
            "median |pred - truth|": float(np.median(np.abs(err_truth))),
            "P(|pred - truth| <= 0.03)": float(np.mean(np.abs(err_truth) <= 0.03)),
            "P(|pred - measured| <= 0.03)": float(np.mean(np.abs(err_measured) <= 0.03)),
            "95% interval covers the truth": covered / n, "measured inside the interval": inside / n,
            "rungs + check FLOPs": flops, "minutes (2 workers)": flops / (2 * THROUGHPUT) / 60}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sims", type=int, default=200, help="simulated wind tunnels per design")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--design", type=int, default=None, help="only this design (its number, from 0)")
    args = ap.parse_args()
    print(f"noise sd {SIGMA0:g} at 1e11 FLOPs x (C/1e11)^-{GAMMA:.2f}; envelope {ENVELOPE}; {args.sims} per design")
    for i, (name, design) in enumerate(DESIGNS.items()):
        if args.design is not None and i != args.design:
            continue
        out = simulate(design, args.sims, args.seed)
        print(f"\n{name}")
        for key, value in out.items():
            print(f"  {key:32s} {value:.3g}")


if __name__ == "__main__":
    main()
