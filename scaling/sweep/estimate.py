"""How long a sweep will take on this device: a short throughput probe per distinct model shape (probe.py)."""

from __future__ import annotations

import json
import math

from scaling.probe import tokens_per_second
from scaling.sweep.launcher import LauncherConfig
from scaling.sweep.workers import parallel_cells, worker_slots

MAX_PROBES = 6
"""Distinct (model, batch) pairs timed; the rest are estimated from the probes' mean FLOP rate."""
OVERHEAD_S = 0.5
"""Per-cell cost beyond training steps (held-out evaluation, record, checkpoint clean-up)."""


def _shape_key(cell) -> str:
    return json.dumps([cell.run.model.__dict__, cell.run.train.batch_size], sort_keys=True, default=str)


def estimate_seconds(cell, tokens_per_s: float, overhead_s: float = OVERHEAD_S) -> float:
    """Wall time of a cell from a measured throughput (training) plus a fixed overhead."""
    return cell.plan.tokens / tokens_per_s + overhead_s if tokens_per_s > 0 else math.nan


def estimate_sweep_seconds(plan, launcher: LauncherConfig | None = None) -> dict[str, float]:
    """Seconds per cell id, probed on as many CPU threads as a worker of the launcher (default: the plan's)
    will have."""
    launcher = launcher or plan.config.launcher
    device = launcher.device
    threads = worker_slots(launcher)[0][2]
    rates: dict[str, float] = {}
    flop_rates = []
    for cell in plan.cells:
        key = _shape_key(cell)
        if key not in rates and len(rates) < MAX_PROBES:
            try:
                rates[key] = tokens_per_second(cell.run.model, cell.run.train.batch_size, device=device,
                                               threads=threads)
            except Exception:  # an estimate is not worth failing the sweep for
                continue
            flop_rates.append(rates[key] * cell.plan.counts.M)
    mean_flop_rate = sum(flop_rates) / len(flop_rates) if flop_rates else 0.0
    out = {}
    for cell in plan.cells:
        tps = rates.get(_shape_key(cell)) or (mean_flop_rate / cell.plan.counts.M if mean_flop_rate else 0.0)
        if tps:
            out[cell.run_id] = estimate_seconds(cell, tps)
    return out


def sweep_wall_seconds(estimates: dict[str, float], launcher: LauncherConfig) -> tuple[float, int]:
    """(wall seconds, cells at once) for the estimated cells run by the launcher's workers on this machine."""
    at_once = max(1, min(parallel_cells(launcher), len(estimates) or 1))
    return sum(estimates.values()) / at_once, at_once
