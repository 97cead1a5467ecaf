"""Benchmark: a dense model with a heavy head (its vocabulary makes the head + loss cost several decoder layers)
trained through a real pipeline (train.parallel=pipeline, torchrun, gloo on CPU) with the engines' even split and
the balanced one, side by side with what the layout's schedule simulation predicted from unit times measured on
this machine; and the same run on one process, whose held-out loss and curve the pipelines must match (1e-4).

    python analysis/bench_pipeline.py                 # 2 processes (a 2-core machine: one core each)
    python analysis/bench_pipeline.py --procs 4       # needs >= 4 cores: 4 processes on fewer cores share them,
                                                      # and the measured times say nothing of the split

Nothing else may run meanwhile: the step times are wall-clock.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = ["model.d_model=128", "model.n_heads=4", "model.n_layers=8", "model.n_dense_layers=8",
         "model.d_ff_dense=512", "model.seq_len=128", "model.vocab_size=16384", "data.tokenizer=bpe",
         "data.bpe_vocab=16384"]
TRAIN = ["train.batch_size=32", "train.micro_batch_size=4", "data.val_tokens=8192", "train.device=cpu",
         "train.threads=1", "wandb.mode=disabled", "train.checkpoint_every=100000"]


def run_file(folder: Path, overrides: list[str]) -> Path:
    from scaling.compose import compose
    from scaling.config import to_dict

    run = compose(overrides + [f"results_dir={folder}"])
    path = folder / "run.json"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"run": to_dict(run)}))
    return path


def record(folder: Path) -> dict:
    (path,) = list(folder.glob("*/runs/*.json"))
    return json.loads(path.read_text())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--budget", default="4e11")
    args = parser.parse_args()
    if (os.cpu_count() or 1) < args.procs:
        print(f"note: {args.procs} processes on {os.cpu_count()} cores share them: the times are not the split's")
    from scaling.compose import compose
    from scaling.layout.schedule import simulate
    from scaling.pipelining import split_of
    from scaling.probe import unit_seconds

    base = MODEL + TRAIN + [f"budget_flops={args.budget}", "sweep=pp"]
    model = compose(base).model
    seconds = unit_seconds(model, 4, "cpu")
    tokens = 4 * model.seq_len
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        single = run_file(Path(tmp) / "single", base)
        subprocess.run([sys.executable, "-m", "scaling.sweep.run_cell", str(single)], check=True,
                       capture_output=True)
        one = record(Path(tmp) / "single")
        for split_name in ("even", "balanced"):
            split, units = split_of(split_name, model, args.procs, 1, seconds)
            fwd = [sum(seconds[units[i].name][0] for i in s) * tokens for s in split.stages]
            bwd = [sum(seconds[units[i].name][1] for i in s) * tokens for s in split.stages]
            predicted = simulate(fwd, bwd, [0.0] * len(fwd), args.procs, 32 // 4).step_s
            folder = Path(tmp) / split_name
            path = run_file(folder, base + ["train.parallel=pipeline", f"train.pipeline_split={split_name}"])
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                  f"--nproc_per_node={args.procs}", "-m", "scaling.sweep.run_cell", str(path)],
                                 capture_output=True, text=True)
            if out.returncode:
                print(out.stdout[-3000:], out.stderr[-3000:])
                return 1
            rec = record(folder)
            p = rec["results"]["pipeline"]
            same = max(abs(a["val_loss"] - b["val_loss"]) for a, b in zip(rec["results"]["evals"],
                                                                          one["results"]["evals"], strict=True))
            rows.append((split_name, p["layout"], predicted, p["step_s"], same, time.perf_counter() - t0,
                         [round(s["forward_s"] + s["backward_s"], 4) for s in p["stages"]]))
    print(f"{model.n_layers} dense layers, d_model {model.d_model}, vocabulary {model.vocab_size}, {args.procs} "
          f"processes, 8 micro-batches of 4 x {model.seq_len} tokens; one process: held-out loss "
          f"{one['results']['val_loss']:.5f}")
    print(f"{'split':9s} {'layout':24s} {'predicted s':>12s} {'measured s':>11s} {'|dloss| vs 1 proc':>18s}  "
          f"stage compute s")
    for name, layout, predicted, measured, same, _, stages in rows:
        print(f"{name:9s} {layout:24s} {predicted:12.4f} {measured:11.4f} {same:18.2e}  {stages}")
    (e, b) = rows
    print(f"even / balanced: predicted x{e[2] / b[2]:.3f}, measured x{e[3] / b[3]:.3f} "
          f"({abs((e[3] / b[3]) / (e[2] / b[2]) - 1):.1%} apart)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
