"""The pipeline units' measured times on this device against their FLOPs-only cost, and what the measured weights
change in the balanced split (issue 32: "an index select is not a GEMM"). On a GPU it is step 7 of
analysis/gpu_check.sh; on a CPU it runs as is (small shape).

    python analysis/layout_unit_times.py [--pp 8] [overrides ...]
"""

from __future__ import annotations

import argparse
import sys


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pp", type=int, default=4)
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    import torch

    from scaling.compose import compose
    from scaling.layout.engines import megatron_layout
    from scaling.layout.split import balanced_split
    from scaling.layout.units import pipeline_units, with_measured
    from scaling.probe import unit_seconds

    defaults = (["model.d_model=2048", "model.n_heads=16", "model.n_layers=16", "model.n_dense_layers=1",
                 "model.seq_len=2048", "model.vocab_size=126464", "model.n_experts=64", "model.top_k=4",
                 "model.d_expert=512"] if torch.cuda.is_available() else
                ["model.d_model=128", "model.n_heads=4", "model.n_layers=8", "model.n_dense_layers=1",
                 "model.seq_len=128", "model.vocab_size=16384", "model.n_experts=8", "model.top_k=2",
                 "model.d_expert=128"])
    model = compose(defaults + args.overrides).model
    seconds = unit_seconds(model, args.rows, "auto")
    units = pipeline_units(model, compute_bytes=2 if torch.cuda.is_available() else 4)
    layer = next(u for u in units if u.kind == "t" and "MoE" in u.name)
    measured_layer = sum(seconds[layer.name])
    print(f"{'unit':18s} {'FLOPs cost / MoE layer':>23s} {'measured / MoE layer':>21s}")
    shown = set()
    for u in units:
        key = u.name if u.kind != "t" else u.name.split("(")[1]
        if key in shown:
            continue
        shown.add(key)
        print(f"{u.name:18s} {u.cost / layer.cost:23.3f} {sum(seconds[u.name]) / measured_layer:21.3f}")
    flops_split = balanced_split(units, args.pp)
    measured_split = balanced_split(with_measured(units, seconds, 1e12), args.pp)
    print(f"balanced split, FLOPs only: {megatron_layout(flops_split, units)}")
    print(f"balanced split, measured:   {megatron_layout(measured_split, units)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
