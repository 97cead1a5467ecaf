"""Benchmark: `scaling fit` on 10,000 synthetic run records (the results store, as a sweep writes it).

Prints the wall time of the whole command (a fresh process: imports, reading 10,000 JSON records, every fit with
1,000 run-level resamples, the held-out refit, fit.json and the figures) next to the same fit on a CSV of the same
runs, each also without the figures (--no-plots), and the target (< 5 s).

    python analysis/bench_fit.py [--records 10000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from scaling import store


def make_records(root: Path, n: int, seed: int = 0) -> pd.DataFrame:
    """n completed records: lr x batch grids at 8 budgets, losses from a known bowl plus noise."""
    rng = np.random.default_rng(seed)
    budgets = np.logspace(17, 20, 8)
    per_budget = n // len(budgets)
    rows = []
    for C in budgets:
        lr_opt, b_opt, params = 0.3 * C**-0.125, 0.3 * C**0.33, 0.1 * C**0.5
        tokens = C / (6 * params)
        for i in range(per_budget):
            lr = lr_opt * np.exp(rng.uniform(-1.5, 1.5))
            b = b_opt * np.exp(rng.uniform(-1.5, 1.5))
            loss = 1.8 + 30 * C**-0.08 + 0.02 * np.log(lr / lr_opt) ** 2 + 0.01 * np.log(b / b_opt) ** 2
            loss *= np.exp(rng.normal(0, 0.002))
            rid = f"{int(np.log10(C) * 100)}-{i:06d}"
            rec = store.new_record(rid, "bench", rid, {"model": {"n_experts": 8}, "train": {"lr": lr}},
                                   {"params_active_non_embedding": params, "params_non_embedding": 4 * params,
                                    "tokens": tokens, "flops_per_token": {"M": 6 * params}, "budget_flops": C,
                                    "batch_tokens": b, "activation_ratio": 0.25, "granularity": 2.0,
                                    "data_fingerprint": "bench"}, {})
            rec.update(status="completed", results={"val_loss": loss})
            store.write_record(store.record_path(root, "bench", rid), rec)
            rows.append({"params": params, "tokens": tokens, "flops": C, "loss": loss, "lr": lr, "batch_tokens": b})
    return pd.DataFrame(rows)


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "results"
        df = make_records(root, args.records)
        csv = Path(tmp) / "runs.csv"
        df.to_csv(csv, index=False)
        cli = [sys.executable, "-m", "scaling.cli", "fit", "--json", "-o", str(Path(tmp) / "fit")]
        t_store = timed([*cli, "bench", "--results-dir", str(root)])
        t_csv = timed([*cli, "--from", str(csv)])
        t_store_np = timed([*cli, "bench", "--results-dir", str(root), "--no-plots"])
        t_csv_np = timed([*cli, "--from", str(csv), "--no-plots"])
    print(f"{'input':28s} {'records':>8s} {'wall s':>8s} {'no figures':>11s} {'target s':>9s}")
    print(f"{'results store (JSON)':28s} {len(df):8d} {t_store:8.2f} {t_store_np:11.2f} {5.0:9.1f}")
    print(f"{'CSV':28s} {len(df):8d} {t_csv:8.2f} {t_csv_np:11.2f} {5.0:9.1f}")


if __name__ == "__main__":
    main()
