"""The compute device: which one, what it is called, and its peak matmul throughput (for MFU)."""

from __future__ import annotations

import functools
import time

import torch

from scaling.gpus import GPU_BF16_PEAK, gpu_of

CPU_PEAK_FILE = "cpu_peak_flops.json"
"""In the cache folder: the measured fp32 matmul peak per CPU, thread count and kernel set."""


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
def peak_flops(device_str: str, low_precision: bool, fresh: bool = False) -> float | None:
    """Peak matmul FLOP/s: the data-sheet bf16 number for known GPUs, or, on CPU, a measurement of fp32 matmul
    throughput (cpu_matmul_peak), kept per CPU, thread count and kernel set in the cache folder so that every
    training process does not spend 0.3-1 s re-measuring it; `fresh` (scaling bench) measures again and keeps the
    new value. None when unknown."""
    device = torch.device(device_str)
    if device.type == "cuda":
        gpu = gpu_of(torch.cuda.get_device_name(device))
        if gpu is None:
            return None
        return GPU_BF16_PEAK[gpu] if low_precision else GPU_BF16_PEAK[gpu] / 2  # tf32 tensor cores: half the bf16
    from scaling.cache import read_json, write_json

    known, key = read_json(CPU_PEAK_FILE), _cpu_key()
    if not fresh and isinstance(known.get(key), (int, float)) and known[key] > 0:
        return float(known[key])
    peak = cpu_matmul_peak()
    write_json(CPU_PEAK_FILE, {**known, key: peak})  # unwritable: a measurement per process, nothing else
    return peak


def _cpu_key() -> str:
    """What the CPU peak depends on: the processor, torch's threads, its version and the MKL kernel set."""
    import platform

    from scaling import cpu_blas

    model = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{model} | {torch.get_num_threads()} threads | torch {torch.__version__} | "
            f"{'avx512' if cpu_blas.state().active else 'default'} kernels")


def cpu_matmul_peak() -> float:
    """fp32 matmul FLOP/s measured here: best of five 2048^3 products after a warm-up (~0.3 s on 2 cores)."""
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up (thread pool, caches)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best
