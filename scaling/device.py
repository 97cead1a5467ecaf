"""The compute device: which one, what it is called, and its peak matmul throughput (for MFU)."""

from __future__ import annotations

import functools
import time

import torch

# Dense bf16 tensor-core peaks (FLOP/s, no sparsity) from the vendors' data sheets.
GPU_BF16_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "L4": 121e12}


def pick(spec: str = "auto") -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={spec} but CUDA is not available here: use train.device=auto or cpu")
    return device


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from scaling import cpu_blas

    blas = ", MKL AVX-512 on AMD" if cpu_blas.state().active else ""
    return f"cpu ({torch.get_num_threads()} threads{blas})"


@functools.cache
def peak_flops(device_str: str, low_precision: bool) -> float | None:
    """Peak matmul FLOP/s: the data-sheet bf16 number for known GPUs, or, on CPU, a measurement of fp32 matmul
    throughput (best of five 2048^3 products after a warm-up, ~0.3 s on 2 cores). None when unknown."""
    device = torch.device(device_str)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peak in GPU_BF16_PEAK.items():
            if key in name:
                return peak if low_precision else peak / 2  # tf32 tensor cores: half the bf16 rate
        return None
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up (thread pool, caches)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best
