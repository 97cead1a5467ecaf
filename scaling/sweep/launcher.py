"""Where a sweep's cells run: the `launcher` config group of a sweep config (`launcher=local`, `launcher=slurm`).

`scaling sweep CONFIG launcher=slurm launcher.partition=gpu launcher.runs_per_gpu=4` picks and tunes it on the
command line; a cluster's settings can also live in a file `launcher/<name>.yaml` next to the sweep config
(`defaults: [slurm, _self_]` then the keys), chosen with `launcher=<name>`. The local launcher ignores every
field but `kind`; its worker counts are `scaling sweep` options.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

KINDS = ("local", "slurm")


@dataclass
class LauncherConfig:
    """How and where the cells of a sweep are trained."""

    kind: str = "local"
    """`local`: worker processes on this machine. `slurm`: a submitit job array on a Slurm cluster."""
    partition: str | None = None
    """(slurm) Partition to submit to; None = the cluster's default partition."""
    account: str | None = None
    """(slurm) Account to charge (sbatch --account); None = the user's default."""
    qos: str | None = None
    """(slurm) Quality of service (sbatch --qos); None = the default."""
    time_per_cell_min: int = 60
    """(slurm) Time limit of one cell, minutes. An array task's limit is this times the most cells one of its
    lanes runs in turn. A cell still training at the limit checkpoints on the warning signal and is requeued."""
    gpus_per_task: int = 1
    """(slurm) GPUs per array task; 0 = CPU-only tasks."""
    cpus_per_task: int = 8
    """(slurm) CPU cores per array task (data loading is light: a few per GPU suffice)."""
    mem_gb: float = 32.0
    """(slurm) Memory per array task, GB."""
    runs_per_gpu: int = 1
    """(slurm) Cells trained side by side on each GPU of a task (on CPU-only tasks: side by side in the task).
    Packing small cells fills a GPU that one small model leaves idle."""
    gpus_per_run: int = 1
    """(slurm) GPUs per cell. More than 1 launches each cell with torchrun (data parallel) on that many GPUs of
    the task; gpus_per_task must then be a multiple of it and runs_per_gpu 1. On CPU-only tasks
    (gpus_per_task=0): processes per cell (gloo)."""
    cells_per_lane: int = 1
    """(slurm) Cells each lane trains in turn. Cells are dealt to tasks so that their estimated times (budget
    FLOPs) balance; more cells per lane = fewer, longer tasks (less queueing and start-up per cell)."""
    array_parallelism: int = 64
    """(slurm) Most array tasks running at once (sbatch --array=...%N)."""
    setup: list[str] = field(default_factory=list)
    """(slurm) Shell lines run in each task before training, e.g. ["module load cuda/12.4",
    "source ~/venvs/scaling/bin/activate"]."""
    sbatch: dict[str, Any] = field(default_factory=dict)
    """(slurm) Extra sbatch options, e.g. {constraint: h100, exclusive: true, reservation: big}."""
    signal_delay_s: int = 120
    """(slurm) Seconds before the time limit at which Slurm sends the warning signal (SIGUSR2): the running cells
    checkpoint, stop, and the task is requeued to resume them."""
    max_requeues: int = 5
    """(slurm) Most requeues after time limits per task (pre-emptions do not count)."""


def register() -> None:
    """Put `launcher/local` and `launcher/slurm` in Hydra's ConfigStore (usable from any config folder)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(group="launcher", name="local", node=LauncherConfig(kind="local"))
    cs.store(group="launcher", name="slurm", node=LauncherConfig(kind="slurm"))


def check(launcher: LauncherConfig) -> list[str]:
    """Problems with a launcher config, each naming the key and the fix; empty when it is usable."""
    problems = []
    if launcher.kind not in KINDS:
        problems.append(f"launcher.kind={launcher.kind!r} is not one of {', '.join(KINDS)}")
    for key in ("time_per_cell_min", "runs_per_gpu", "gpus_per_run", "cells_per_lane", "array_parallelism"):
        if getattr(launcher, key) < 1:
            problems.append(f"launcher.{key}={getattr(launcher, key)} must be at least 1")
    if launcher.gpus_per_task < 0 or launcher.cpus_per_task < 1 or launcher.mem_gb <= 0:
        problems.append("launcher.gpus_per_task must be >= 0, cpus_per_task >= 1 and mem_gb > 0")
    if launcher.gpus_per_run > 1:
        if launcher.gpus_per_task % launcher.gpus_per_run:
            problems.append(f"launcher.gpus_per_task={launcher.gpus_per_task} is not a multiple of "
                            f"launcher.gpus_per_run={launcher.gpus_per_run}")
        if launcher.runs_per_gpu != 1:
            problems.append("launcher.runs_per_gpu must be 1 when launcher.gpus_per_run > 1")
    if launcher.signal_delay_s < 10:
        problems.append(f"launcher.signal_delay_s={launcher.signal_delay_s} leaves no time to checkpoint: use >= 10")
    return problems
