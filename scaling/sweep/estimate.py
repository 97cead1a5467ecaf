"""How long a sweep will take on this device: a short throughput probe per distinct model shape (probe.py)."""

from __future__ import annotations

import math

from scaling.gpus import GPU_BF16_PEAK, measured_mfu, run_shape_key
from scaling.probe import tokens_per_second
from scaling.sweep.launcher import LauncherConfig
from scaling.sweep.workers import parallel_cells, worker_slots

PROBE_MEMORY_FRACTION = 0.25
"""A cell is probed on the CPU only when its training memory (scaling/memory.py) is below this fraction of the
memory available here: a GPU preset's cells (tens of GiB) would exhaust the machine, and measure nothing useful."""
GPU_STUDY_FLOPS = 1e17
"""A plan of at least this many FLOPs (or one checked against GPU memory) is costed in GPU-hours too."""
MAX_PROBES = 6
"""Distinct (model, batch) pairs timed; the rest are estimated from the probes' mean FLOP rate."""
OVERHEAD_S = 0.5
"""Per-cell cost beyond training steps (held-out evaluation, record, checkpoint clean-up)."""


def estimate_seconds(cell, tokens_per_s: float, overhead_s: float = OVERHEAD_S, tokens: int | None = None) -> float:
    """Wall time of a cell from a measured throughput (training `tokens`, default all of the cell's) plus a fixed
    overhead."""
    tokens = cell.plan.tokens if tokens is None else tokens
    return tokens / tokens_per_s + overhead_s if tokens_per_s > 0 else math.nan


def estimate_sweep_seconds(plan, launcher: LauncherConfig | None = None) -> dict[str, float]:
    """Seconds per cell id, probed on as many CPU threads as a worker of the launcher (default: the plan's)
    will have."""
    launcher = launcher or plan.config.launcher
    device = launcher.device
    threads = worker_slots(launcher)[0][2]
    rates: dict[str, float] = {}
    flop_rates = []
    probe_on_cpu = device == "cpu" or (device == "auto" and not _cuda_here())
    for cell in plan.cells:
        key = run_shape_key(cell.run)
        if probe_on_cpu and not _fits_in_memory_here(cell):
            continue
        if key not in rates and len(rates) < MAX_PROBES:
            try:
                t = cell.run.train
                rates[key] = tokens_per_second(cell.run.model, t.batch_size, device=device, threads=threads,
                                               precision=t.precision, fp8_scaling=t.fp8_scaling)
            except Exception:  # an estimate is not worth failing the sweep for
                continue
            flop_rates.append(rates[key] * cell.plan.counts.M)
    mean_flop_rate = sum(flop_rates) / len(flop_rates) if flop_rates else 0.0
    trained = plan.trained_tokens()  # a branching cell trains only its own part
    out = {}
    for cell in plan.cells:
        tps = rates.get(run_shape_key(cell.run)) or (mean_flop_rate / cell.plan.counts.M if mean_flop_rate else 0.0)
        if tps:
            out[cell.run_id] = estimate_seconds(cell, tps, tokens=trained[cell.run_id])
    return out


def gpu_hours(total_flops: float, mfu: float, gpu: str = "H100") -> float:
    """GPU-hours of `total_flops` (counted as MFU counts them: SweepPlan.mfu_flops, the output head included) at
    `mfu` of the GPU's dense bf16 peak (gpus.GPU_BF16_PEAK)."""
    return total_flops / (GPU_BF16_PEAK[gpu] * mfu) / 3600


def cell_mfu(plan) -> dict[str, tuple[float, bool]]:
    """Per cell id, (MFU, measured): the MFU `scaling bench` measured for the cell's shape on launcher.gpu
    (gpus.measured_mfu), else launcher.assumed_mfu."""
    launcher = plan.config.launcher
    measured = measured_mfu(launcher.gpu)
    out = {}
    for c in plan.cells:
        mfu = measured.get(run_shape_key(c.run))
        out[c.run_id] = (mfu, True) if mfu else (launcher.assumed_mfu, False)
    return out


def cell_gpu_hours(plan) -> dict[str, float]:
    """Per cell id, the GPU-hours its own steps take on launcher.gpu (gpu_hours of its FLOPs with the head,
    SweepPlan.cell_mfu_flops, at cell_mfu); what the dry run's GPU h column, the Slurm limits and reservations
    read."""
    mfu, gpu = cell_mfu(plan), plan.config.launcher.gpu
    return {run_id: gpu_hours(flops, mfu[run_id][0], gpu) for run_id, flops in plan.cell_mfu_flops().items()}


def _cuda_here() -> bool:
    import torch

    return torch.cuda.is_available()


def _fits_in_memory_here(cell) -> bool:
    """Whether a CPU probe of the cell's model stays within PROBE_MEMORY_FRACTION of the available memory."""
    import os

    from scaling.memory import need

    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not Linux: no probe of doubtful size
        available = 0
    probe_rows = max(1, cell.run.train.batch_size)
    return need(cell.run.model, probe_rows, 1, "ddp", on_gpu=False).total < PROBE_MEMORY_FRACTION * available


def sweep_wall_seconds(estimates: dict[str, float], launcher: LauncherConfig) -> tuple[float, int]:
    """(wall seconds, cells at once) for the estimated cells run by the launcher's workers on this machine."""
    at_once = max(1, min(parallel_cells(launcher), len(estimates) or 1))
    return sum(estimates.values()) / at_once, at_once
