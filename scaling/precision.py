"""A run's number formats (train.precision): which one a device trains in, the autocast around the step, and the
model's FP8 conversion (the numerics are scaling/model/fp8.py's). Used by training, the throughput probe and
`scaling bench`, so all three time and train the same step.
"""

from __future__ import annotations

import logging
import warnings

LOW_PRECISION = ("bf16", "fp8")
"""The precisions that train under bf16 autocast (FP8's base precision is bf16)."""


def resolve(precision: str, device) -> str:
    """train.precision for this device: 'auto' is bf16 on CUDA, fp32 elsewhere."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def autocast(device, precision: str):
    """bf16 autocast for bf16 and fp8, on CUDA and on the CPU alike; none for fp32."""
    import torch

    if precision in LOW_PRECISION and device.type == "cpu":
        # RMSNorm's fp32 weight on a bf16 input: torch says it cannot use its fused kernel (on every call site once)
        warnings.filterwarnings("ignore", message="Mismatch dtype between input and weight")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision in LOW_PRECISION)


def fp8_hardware(device) -> bool:
    """Whether this device has FP8 tensor cores (CUDA compute capability >= 8.9: Ada, Hopper and later)."""
    import torch

    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)


def prepare(model, precision: str, fp8_scaling: str, device) -> dict:
    """Ready the model for `precision` (resolved; FP8: its GEMMs converted in place, real on FP8 hardware,
    emulated elsewhere; before any sharding) and return what the record says of it."""
    info = {"precision": precision}
    if precision != "fp8":
        return info
    logging.getLogger("torchao").setLevel(logging.ERROR)  # on a CPU-only torch: its CUDA kernels "failed to load"
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)  # torchao 0.18 registers an Enum (deprecated)
    from scaling.model import fp8

    info.update(fp8.convert(model, fp8.Fp8Recipe(fp8_scaling), emulate=not fp8_hardware(device)))
    return info
