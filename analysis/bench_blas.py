"""Benchmark: fp32 matmul throughput and a training step with MKL's default kernel choice against its AVX-512
kernels (scaling/cpu_blas.py), side by side in one run.

MKL's choice is made once per process, so each side runs in child processes, alternated (default, AVX-512, default,
...) for `--rounds` rounds; medians with min and max. On an Intel CPU, or an AMD one without AVX-512, both sides
are the same (the switch is a no-op there) and the header says so.

    python analysis/bench_blas.py            # GEMMs of the shapes our small models run, and a small MoE step
    python analysis/bench_blas.py --json     # {"gflops": {shape: {"mkl_default": x, "avx512": y}}, "step_ms": ...}
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

# (rows, inner, cols): a square reference, then the matmuls of the small (d128) and large (d256) models of
# analysis/bench_moe.py: fused qkv, one expert's gate/up and down, the dense FFN, the LM head.
SHAPES = [(2048, 2048, 2048), (4096, 128, 384), (1024, 128, 256), (1024, 128, 128), (4096, 128, 512),
          (4096, 128, 256), (4096, 256, 768), (512, 256, 512), (512, 256, 256)]
SIDES = {"mkl_default": "0", "avx512": "1"}


def child() -> None:
    """Measure in this process and print one JSON line (the parent sets SCALING_MKL_AVX512)."""
    import time

    # isort: off
    import scaling.cpu_blas  # first: it acts before torch loads

    scaling.cpu_blas.enable()
    import torch
    # isort: on

    from bench_moe import BATCH, SIZES, ours

    from scaling.probe import measure

    def median_time(fn, reps: int) -> float:
        fn()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    gflops = {}
    for m, k, n in SHAPES:
        a, b = torch.randn(m, k), torch.randn(k, n)
        gflops[f"{m}x{k}x{n}"] = 2 * m * k * n / median_time(lambda a=a, b=b: a @ b, 20) / 1e9
    step = measure(ours(SIZES["small"], dense=False), BATCH, "cpu", rounds=8, steps=1, warmup=1)
    print(json.dumps({"active": scaling.cpu_blas.state().active, "reason": scaling.cpu_blas.state().reason,
                      "gflops": gflops, "step_ms": 1e3 * step["step_s"]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="Print the results as JSON instead of the table.")
    parser.add_argument("--rounds", type=int, default=3, help="Child processes per side (alternated).")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child()
        return
    runs = {side: [] for side in SIDES}
    for r in range(args.rounds):
        for side, switch in SIDES.items():
            env = {**os.environ, "SCALING_MKL_AVX512": switch}
            out = subprocess.run([sys.executable, __file__, "--child"], env=env, capture_output=True, text=True,
                                 check=True)
            runs[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1}/{args.rounds}: {side} done", file=sys.stderr, flush=True)

    def stats(side: str, get) -> dict:
        xs = [get(run) for run in runs[side]]
        return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}

    result = {
        "avx512_reason": runs["avx512"][0]["reason"],
        "gflops": {shape: {side: stats(side, lambda run, s=shape: run["gflops"][s]) for side in SIDES}
                   for shape in runs["avx512"][0]["gflops"]},
        "step_ms": {side: stats(side, lambda run: run["step_ms"]) for side in SIDES},
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"fp32 torch.mm, median [min-max] over {args.rounds} processes per side, alternated; AVX-512 side: "
          f"{result['avx512_reason']}")
    print(f"  {'m x k x n':16s} {'MKL default GFLOP/s':>26s} {'AVX-512 GFLOP/s':>26s} {'ratio':>6s}")

    def cell(s: dict, fmt: str) -> str:
        return f"{s['median']:{fmt}} [{s['min']:{fmt}}-{s['max']:{fmt}}]"

    for shape, sides in result["gflops"].items():
        d, a = sides["mkl_default"], sides["avx512"]
        print(f"  {shape:16s} {cell(d, '6.0f'):>26s} {cell(a, '6.0f'):>26s} {a['median'] / d['median']:5.2f}x")
    d, a = result["step_ms"]["mkl_default"], result["step_ms"]["avx512"]
    print(f"  {'MoE step (ms)':16s} {cell(d, '6.1f'):>26s} {cell(a, '6.1f'):>26s} {d['median'] / a['median']:5.2f}x"
          "   (small MoE of bench_moe.py, eager, batch 16 x 256)")


if __name__ == "__main__":
    main()
