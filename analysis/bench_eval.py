"""Benchmark: what the validation curve costs. Each run trained twice, side by side in one process: with the curve
(the default, `train.curve_val_tokens=8192`: the held-out loss on 8192 tokens at steps 16, 23, 32, 45, ... and
three points inside the WSD decay) and without it (`train.curve_val_tokens=0`, the baseline: one evaluation of the
whole held-out set at the end). Same run, same seed: the final loss must agree exactly (the curve only reads the
model), so the difference is the curve's time.

Runs: the wind tunnel's cheapest rung (d16 at 1e11 FLOPs, 328 steps), a middle one (d24 at 4.76e11, 893 steps) and
the demo's smallest cell (d64 at 1e11, 2 layers), one thread each as a two-worker sweep gives them.

    python analysis/bench_eval.py          # the table (about 4 minutes on 2 cores; nothing else running)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from rich.console import Console

from scaling.compose import compose
from scaling.run import plan_run
from scaling.train import curve_steps, train

WIND_TUNNEL = ["model=tiny_moe", "model.n_heads=2", "train.batch_size=8", "train.schedule=wsd",
               "train.warmup_steps=20"]
RUNS = {
    "wind tunnel d16 at 1e11": [*WIND_TUNNEL, "model.d_model=16", "model.d_expert=32", "budget_flops=1e11",
                                "train.lr=0.0128"],
    "wind tunnel d24 at 4.76e11": [*WIND_TUNNEL, "model.d_model=24", "model.d_expert=48", "budget_flops=4.76e11",
                                   "train.lr=0.00669"],
    "demo d64 at 1e11": ["model=tiny_moe", "train.batch_size=8", "budget_flops=1e11", "train.lr=4e-3"],
}


def timed(overrides: list[str], root: str) -> tuple[float, float, int]:
    """(train seconds, val loss, curve points) of one run in a fresh results folder, W&B off, one thread."""
    run = compose([*overrides, f"results_dir={root}", "wandb.mode=disabled", "train.threads=1"])
    t0 = time.perf_counter()
    record = train(run, show_progress=False, console=Console(quiet=True))
    wall = time.perf_counter() - t0
    return wall, record["results"]["val_loss"], len(record["results"]["evals"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="timings of each side per run (medians; order alternates)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as warm:  # the first training in a process pays one-time costs: not timed
        timed([*RUNS["demo d64 at 1e11"], "train.curve_val_tokens=0"], warm)
    print(f"{'run':30s} {'steps':>6s} {'points':>6s} {'no curve s':>10s} {'curve s':>8s} {'cost':>6s}  same loss")
    for name, overrides in RUNS.items():
        sides = {"base": [*overrides, "train.curve_val_tokens=0"], "curve": overrides}
        times, losses, points = {"base": [], "curve": []}, {}, 0
        for r in range(args.rounds):
            for side in (("base", "curve") if r % 2 == 0 else ("curve", "base")):
                with tempfile.TemporaryDirectory() as root:
                    wall, losses[side], n = timed(sides[side], root)
                times[side].append(wall)
                points = max(points, n)
        run = compose(overrides)
        steps = plan_run(run).steps
        assert points == len(curve_steps(run.train, steps)) + 2  # the curve, its last point, the whole set
        base_s, curve_s = statistics.median(times["base"]), statistics.median(times["curve"])
        print(f"{name:30s} {steps:6d} {points:6d} {base_s:10.2f} {curve_s:8.2f} {curve_s / base_s - 1:+6.1%}  "
              f"{losses['curve'] == losses['base']}")


if __name__ == "__main__":
    main()
