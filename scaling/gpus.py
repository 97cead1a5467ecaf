"""What a GPU plan is costed with: the data-sheet bf16 peaks of the GPUs a sweep may target, and the MFU that
`scaling bench` measured on one of them, kept per GPU and model shape. Standard library only (a dry run imports it
without torch).

The measured MFU lives in the cache folder (cache.py) as `measured_mfu.json`: {GPU: {shape key: {"mfu", "tokens_per_s",
"device", "when"}}}. `scaling bench` (or `scaling bench --sweep NAME`, every shape of a sweep) writes it on a GPU;
a dry run for that GPU (launcher.gpu) reads it and costs each cell whose shape was measured at its measured MFU,
the rest at launcher.assumed_mfu. On a cluster whose home folder is shared, the login node reads what a GPU node
measured; elsewhere copy the file, or set SCALING_CACHE to a shared folder.
"""

from __future__ import annotations

import json
import time

GPU_BF16_PEAK = {"H200": 989e12, "H100": 989e12, "B200": 2250e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12,
                 "L4": 121e12}
"""Dense bf16 tensor-core peaks, FLOP/s, no sparsity, from the vendors' data sheets (B200: 2.25 PFLOP/s dense). A
GPU is known by the first of these names found in its device name ("NVIDIA H100 80GB HBM3" -> H100)."""

MFU_FILE = "measured_mfu.json"


def gpu_of(device_name: str) -> str | None:
    """The GPU_BF16_PEAK name of a CUDA device name, None for an unknown GPU or a CPU."""
    return next((key for key in GPU_BF16_PEAK if key in device_name), None)


def shape_key(model: dict, rows: int, precision: str, fp8_scaling: str) -> str:
    """One training step's shape as MFU depends on it: the model config, the rows per forward pass (the
    micro-batch), the precision."""
    return json.dumps([model, rows, precision, fp8_scaling], sort_keys=True, default=str)


def run_shape_key(run) -> str:
    """shape_key of a RunConfig as it trains (its micro-batch where it has one)."""
    t = run.train
    return shape_key(dict(run.model.__dict__), t.micro_batch_size or t.batch_size, t.precision, t.fp8_scaling)


def measured_mfu(gpu: str) -> dict[str, float]:
    """Shape key -> MFU measured on `gpu` (empty when nothing was measured, or the file is unreadable: a plan then
    costs at launcher.assumed_mfu)."""
    from scaling.cache import read_json

    shapes = read_json(MFU_FILE).get(gpu)
    if not isinstance(shapes, dict):
        return {}
    return {key: float(v["mfu"]) for key, v in shapes.items()
            if isinstance(v, dict) and isinstance(v.get("mfu"), (int, float)) and 0 < v["mfu"] <= 1}


def keep_measured_mfu(gpu: str, key: str, mfu: float, tokens_per_s: float, device: str) -> bool:
    """Keep a measurement (atomically; the last one of a shape wins). False when the cache folder cannot be
    written (the measurement is then printed only)."""
    from scaling.cache import read_json, write_json

    known = read_json(MFU_FILE)
    shapes = known.get(gpu) if isinstance(known.get(gpu), dict) else {}
    shapes[key] = {"mfu": mfu, "tokens_per_s": tokens_per_s, "device": device,
                   "when": time.strftime("%Y-%m-%dT%H:%M:%S")}
    return write_json(MFU_FILE, {**known, gpu: shapes})
