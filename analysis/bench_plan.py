"""Benchmark: planning the presets, with_updates typing a section at a time (now) against a node of the whole run
(the baseline, before issue 26), side by side in one run. Plans are identical either way (their run ids are
compared here too).

    python analysis/bench_plan.py
"""

from __future__ import annotations

import time

from scaling import compose
from scaling.sweep.plan import compose_sweep, plan_sweep

PRESETS = {"demo": [], "lr_batch": ["data.train_tokens=1e10"], "activation_ratio": ["data.train_tokens=1e11"],
           "isoflop": ["data.train_tokens=1e10"]}


def timed_plan(name: str, overrides: list[str], rounds: int = 3) -> tuple[float, list[str]]:
    config = compose_sweep(name, overrides)
    plan_sweep(config, data_required=False)  # warm: data summaries, schema nodes
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        plan = plan_sweep(config, data_required=False)
        best = min(best, time.perf_counter() - t0)
    return best, [c.run_id for c in plan.cells]


def main() -> None:
    fast_path = compose._plain
    print(f"{'preset':18s} {'cells':>6s} {'now s':>8s} {'baseline s':>11s} {'speed-up':>9s}  same ids")
    for name, overrides in PRESETS.items():
        now, ids = timed_plan(name, overrides)
        compose._plain = lambda updates: False  # every update through a node of the whole run
        try:
            base, base_ids = timed_plan(name, overrides)
        finally:
            compose._plain = fast_path
        print(f"{name:18s} {len(ids):6d} {now:8.3f} {base:11.3f} {base / now:8.1f}x  {ids == base_ids}")


if __name__ == "__main__":
    main()
