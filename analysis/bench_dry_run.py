"""Benchmark: a 10,000-cell dry run (issue 31: 5 min 39 s before), stage by stage, now against the baselines it
replaced, side by side in one run: the Slurm deal (a heap of open tasks, O(n log n), against scanning every task
per cell, O(n^2)) and the table (one row per budget above tables.TABLE_CELLS cells, against a row per cell). The
deals are compared for identity too. Then the whole `scaling sweep ... --dry-run` command, timed end to end.

    python analysis/bench_dry_run.py            # nothing else running
"""

from __future__ import annotations

import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = """name: big10k
base: [model.d_model=32, model.n_heads=2, model.d_expert=32, model.seq_len=64, wandb.mode=disabled]
budgets: [2e10, 3e10, 4e10, 8e10, 1.6e11, 3.2e11, 6.4e11, 1.28e12, 2.56e12, 5.12e12]
lr: {values: [1e-4, 2e-4, 4e-4, 8e-4, 1.6e-3, 3.2e-3, 6.4e-3, 1.28e-2, 2.56e-2, 5.12e-2]}
batch: {values: [4096, 8192, 16384, 32768, 65536]}
axes: {model.n_experts: [4, 8, 16, 32, 64], model.top_k: [1, 2, 3, 4]}
"""
OVERRIDES = ["launcher=slurm", "launcher.gpu_memory_gb=80"]


def quadratic_deal(cells, launcher):
    """The deal before issue 31: each cell scans every task for the least loaded one with room."""
    import math

    from scaling.sweep.slurm import cell_flops, lanes_per_task

    per_task = lanes_per_task(launcher) * launcher.cells_per_lane
    n_tasks = math.ceil(len(cells) / per_task)
    tasks, load = [[] for _ in range(n_tasks)], [0.0] * n_tasks
    for cell in sorted(cells, key=lambda c: (-cell_flops(c), c.index)):
        i = min((i for i in range(n_tasks) if len(tasks[i]) < per_task), key=lambda i: (load[i], i))
        tasks[i].append(cell)
        load[i] += cell_flops(cell)
    return tasks


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    from rich.console import Console

    from scaling import tables
    from scaling.sweep.plan import compose_sweep, plan_sweep
    from scaling.sweep.slurm import deal_cells

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big10k.yaml"
        path.write_text(CONFIG)
        t_plan, plan = timed(lambda: plan_sweep(compose_sweep(str(path), OVERRIDES), data_required=False))
        launcher = plan.config.launcher
        t_deal, heap = timed(lambda: deal_cells(plan.cells, launcher))
        t_deal0, scan = timed(lambda: quadratic_deal(plan.cells, launcher))
        same = [[c.run_id for c in t] for t in heap] == [[c.run_id for c in t] for t in scan]

        def render() -> float:
            console = Console(file=io.StringIO(), width=120)
            return timed(lambda: console.print(tables.sweep_table(plan, {})))[0]

        t_table = render()
        limit, tables.TABLE_CELLS = tables.TABLE_CELLS, 10**9
        try:
            t_table0 = render()
        finally:
            tables.TABLE_CELLS = limit
        print(f"{len(plan.cells)} cells; planned in {t_plan:.2f} s")
        print(f"{'stage':28s} {'now s':>8s} {'baseline s':>11s}")
        print(f"{'deal to Slurm tasks':28s} {t_deal:8.3f} {t_deal0:11.3f}   same deal: {same}")
        print(f"{'table (with the Slurm line)':28s} {t_table:8.3f} {t_table0:11.3f}")
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "scaling.cli", "sweep", str(path), *OVERRIDES, "--dry-run",
                              "--no-probe"], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        print(f"`scaling sweep big10k {' '.join(OVERRIDES)} --dry-run --no-probe`: {wall:.1f} s end to end "
              f"(exit {out.returncode})")


if __name__ == "__main__":
    main()
