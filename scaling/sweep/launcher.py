"""Where a sweep's cells run: the `launcher` config group of a sweep config (`launcher=local`, `launcher=slurm`).

`scaling sweep CONFIG launcher=slurm launcher.partition=gpu launcher.runs_per_gpu=4` picks and tunes it on the
command line; a cluster's settings can also live in a file `launcher/<name>.yaml` next to the sweep config
(`defaults: [slurm, _self_]` then the keys), chosen with `launcher=<name>`. The local launcher ignores every
field marked (slurm). The worker settings (`workers`, `runs_per_gpu`, `gpus_per_run`, `device`) serve both:
`scaling sweep --workers 2` is a shorthand for `launcher.workers=2`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

KINDS = ("local", "slurm", "command")


@dataclass
class LauncherConfig:
    """How and where the cells of a sweep are trained."""

    kind: str = "local"
    """`local`: worker processes on this machine. `slurm`: a submitit job array on a Slurm cluster. `command`: worker
    processes on this machine that run your own trainer per cell (`command`; scaling/sweep/command.py)."""
    command: str | None = None
    """(command) Your trainer's command line, with placeholders for the cell's values, e.g. "torchrun
    --nproc_per_node=8 train.py --lr {train.lr} --steps {derived.steps} --result {result_path}"; never run by a
    shell. The trainer writes {"val_loss": ...} to {result_path} (the contract: scaling/sweep/command.py)."""
    workers: int = 1
    """(local) Worker processes on a CPU machine, each with cores / workers threads (a Slurm array task has one
    per lane instead: its GPUs x runs_per_gpu, or runs_per_gpu on a CPU-only task)."""
    device: str = "auto"
    """(local) `auto`: every visible GPU, else the CPU; `cpu`: the CPU even where GPUs are visible. (A Slurm
    task uses its GPUs, or the CPU when gpus_per_task=0.)"""
    partition: str | None = None
    """(slurm) Partition to submit to; None = the cluster's default partition."""
    account: str | None = None
    """(slurm) Account to charge (sbatch --account); None = the user's default."""
    qos: str | None = None
    """(slurm) Quality of service (sbatch --qos); None = the default."""
    time_per_cell_min: int | None = None
    """(slurm) Time limit of one cell, minutes. None: each cell's own, from its estimate on GPU tasks (its FLOPs with
    the output head at assumed_mfu, over its GPUs) x 1.5 + 10 minutes (slurm.TIME_MARGIN, STARTUP_MIN), and 60 on
    CPU-only tasks. An array task's limit is the most its lanes run in turn (one limit serves the array). A cell
    still training at the limit checkpoints on the warning signal and is requeued (max_requeues)."""
    gpus_per_task: int = 1
    """(slurm) GPUs per array task; 0 = CPU-only tasks."""
    cpus_per_task: int = 8
    """(slurm) CPU cores per array task (data loading is light: a few per GPU suffice)."""
    mem_gb: float = 32.0
    """(slurm) Memory per array task, GB."""
    runs_per_gpu: int = 1
    """Cells trained side by side on each GPU (on a CPU-only Slurm task: side by side in the task). Packing small
    cells fills a GPU that one small model leaves idle."""
    gpus_per_run: int = 1
    """GPUs per cell (on each of its nodes). More than 1 launches each cell with torchrun on that many GPUs, data
    parallel or sharded (train.parallel); runs_per_gpu must then be 1, and on Slurm gpus_per_task a multiple of
    it. On CPU: processes per cell (gloo)."""
    max_gpus_per_run: int | None = None
    """Most GPUs per cell when cells differ in size: a cell too big for gpus_per_run GPUs (gpu_memory_gb, the
    memory plan) gets the fewest of 2x, 4x, ... gpus_per_run that hold it, up to this; None = gpus_per_run for
    every cell. On Slurm each GPU count is its own job array (at most gpus_per_task); locally the cells run in
    groups of one GPU count, fewest GPUs first."""
    nodes_per_run: int = 1
    """(slurm) Nodes per cell: more than 1 runs each cell on that many nodes x gpus_per_run GPUs (one array task
    per cell, srun starting torchrun on every node with a c10d rendezvous on the first); gpus_per_task is then the
    GPUs of each node."""
    gpu_memory_gb: float | None = None
    """Memory of one GPU, GiB (as nvidia-smi's MiB / 1024; 80 for an H100, 141 for an H200): every cell's need
    per GPU (scaling/memory.py) is checked against it before anything runs, and the plan picks DDP or FSDP
    (train.parallel=auto) and the micro-batch (train.micro_batch_size=null) from it. None: not checked (the plan
    still shows each cell's need)."""
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
    gpu: str = "H100"
    """The GPU a plan's hours are costed for: one of scaling/gpus.py's GPU_BF16_PEAK (H100, H200, B200, A100, L40S,
    A10, L4); its dense bf16 peak, and the MFU measured on it (below)."""
    assumed_mfu: float = 0.35
    """The model FLOPs utilisation a GPU plan's hours are costed at (FLOPs with the output head, flops.MFU_CONVENTION,
    over the GPU's dense bf16 peak) for a cell whose shape has no measured MFU. `scaling bench --sweep NAME` on the
    target GPU measures every shape of a sweep and keeps it (gpus.py); the dry run then costs those cells at their
    measured MFU and says how many were."""


def register() -> None:
    """Put `launcher/local`, `launcher/slurm` and `launcher/command` in Hydra's ConfigStore (usable from any config
    folder)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(group="launcher", name="local", node=LauncherConfig(kind="local"))
    cs.store(group="launcher", name="slurm", node=LauncherConfig(kind="slurm"))
    cs.store(group="launcher", name="command", node=LauncherConfig(kind="command"))


def check(launcher: LauncherConfig) -> list[str]:
    """Problems with a launcher config, each naming the key and the fix; empty when it is usable."""
    problems = []
    if launcher.kind not in KINDS:
        problems.append(f"launcher.kind={launcher.kind!r} is not one of {', '.join(KINDS)}")
    if launcher.kind == "command" and not (launcher.command or "").strip():
        problems.append("launcher=command needs launcher.command, your trainer's command line, e.g. "
                        "launcher.command='python train.py --lr {train.lr} --steps {derived.steps} --result "
                        "{result_path}'")
    if launcher.command and launcher.kind != "command":
        problems.append(f"launcher.command is only run by launcher=command (this is launcher={launcher.kind})")
    if launcher.kind == "command" and launcher.gpus_per_run > 1:
        problems.append("launcher=command: your command starts its own processes (torchrun ...); leave "
                        "launcher.gpus_per_run at 1")
    if launcher.device not in ("auto", "cpu"):
        problems.append(f"launcher.device={launcher.device!r} is not auto or cpu")
    for key in ("workers", "time_per_cell_min", "runs_per_gpu", "gpus_per_run", "max_gpus_per_run", "nodes_per_run",
                "cells_per_lane", "array_parallelism"):
        if getattr(launcher, key) is not None and getattr(launcher, key) < 1:
            problems.append(f"launcher.{key}={getattr(launcher, key)} must be at least 1")
    if launcher.gpus_per_task < 0 or launcher.cpus_per_task < 1 or launcher.mem_gb <= 0:
        problems.append("launcher.gpus_per_task must be >= 0, cpus_per_task >= 1 and mem_gb > 0")
    if launcher.gpus_per_run > 1:
        if launcher.kind == "slurm" and launcher.gpus_per_task % launcher.gpus_per_run:
            problems.append(f"launcher.gpus_per_task={launcher.gpus_per_task} is not a multiple of "
                            f"launcher.gpus_per_run={launcher.gpus_per_run}")
        if launcher.runs_per_gpu != 1:
            problems.append("launcher.runs_per_gpu must be 1 when launcher.gpus_per_run > 1 (a cell spread over "
                            "GPUs does not share them)")
    if launcher.max_gpus_per_run is not None and launcher.max_gpus_per_run < launcher.gpus_per_run:
        problems.append(f"launcher.max_gpus_per_run={launcher.max_gpus_per_run} is below launcher.gpus_per_run="
                        f"{launcher.gpus_per_run}")
    if launcher.max_gpus_per_run is not None and launcher.max_gpus_per_run > launcher.gpus_per_run:
        if launcher.max_gpus_per_run % launcher.gpus_per_run:
            problems.append(f"launcher.max_gpus_per_run={launcher.max_gpus_per_run} is not a multiple of "
                            f"launcher.gpus_per_run={launcher.gpus_per_run}")
        if launcher.gpu_memory_gb is None:
            problems.append("launcher.max_gpus_per_run needs launcher.gpu_memory_gb (a cell gets more GPUs when "
                            "its memory plan says it needs them)")
        if launcher.nodes_per_run > 1 or launcher.kind == "command":
            problems.append("launcher.max_gpus_per_run applies to single-node cells of launcher=local or slurm")
        if launcher.kind == "slurm" and launcher.gpus_per_task and launcher.max_gpus_per_run > launcher.gpus_per_task:
            problems.append(f"launcher.max_gpus_per_run={launcher.max_gpus_per_run} exceeds "
                            f"launcher.gpus_per_task={launcher.gpus_per_task}: a cell's GPUs are one task's (more "
                            f"take launcher.nodes_per_run)")
    if launcher.gpu_memory_gb is not None and not launcher.gpu_memory_gb > 0:
        problems.append(f"launcher.gpu_memory_gb={launcher.gpu_memory_gb} must be a positive number of GB")
    if launcher.nodes_per_run > 1:
        if launcher.kind != "slurm":
            problems.append(f"launcher.nodes_per_run={launcher.nodes_per_run} needs launcher=slurm (one machine "
                            f"here)")
        if launcher.cells_per_lane != 1 or launcher.runs_per_gpu != 1:
            problems.append("launcher.nodes_per_run > 1 trains one cell per array task: cells_per_lane and "
                            "runs_per_gpu must be 1")
        if launcher.kind == "slurm" and launcher.gpus_per_task and launcher.gpus_per_task != launcher.gpus_per_run:
            problems.append(f"launcher.nodes_per_run > 1: a cell takes whole nodes, so gpus_per_run "
                            f"({launcher.gpus_per_run}) must equal gpus_per_task ({launcher.gpus_per_task})")
    from scaling.gpus import GPU_BF16_PEAK

    if launcher.gpu not in GPU_BF16_PEAK:
        problems.append(f"launcher.gpu={launcher.gpu!r} is not a GPU with a known peak: use one of "
                        f"{', '.join(GPU_BF16_PEAK)}")
    if not 0 < launcher.assumed_mfu <= 1:
        problems.append(f"launcher.assumed_mfu={launcher.assumed_mfu} must be a fraction in (0, 1], e.g. 0.35")
    if launcher.signal_delay_s < 10:
        problems.append(f"launcher.signal_delay_s={launcher.signal_delay_s} leaves no time to checkpoint: use >= 10")
    return problems


def task_workers(launcher: LauncherConfig, lanes: int) -> LauncherConfig:
    """The worker settings inside one Slurm array task of `launcher`: `lanes` workers on a CPU-only task, its
    GPUs otherwise."""
    from dataclasses import replace

    return replace(launcher, workers=lanes, device="cpu" if launcher.gpus_per_task == 0 else "auto")


def devices_per_run(launcher: LauncherConfig) -> int:
    """The processes (GPUs, or CPU processes) one cell trains on: gpus_per_run on each of nodes_per_run nodes."""
    return launcher.gpus_per_run * launcher.nodes_per_run


def device_choices(launcher: LauncherConfig) -> list[int]:
    """The devices per cell a plan may give a cell, fewest first: devices_per_run, then doublings of gpus_per_run
    up to max_gpus_per_run."""
    choices, g = [devices_per_run(launcher)], launcher.gpus_per_run
    while launcher.max_gpus_per_run and g * 2 <= launcher.max_gpus_per_run:
        g *= 2
        choices.append(g * launcher.nodes_per_run)
    return choices


def for_devices(launcher: LauncherConfig, devices: int) -> LauncherConfig:
    """The launcher as it runs cells of `devices` devices each (one node): gpus_per_run = devices."""
    from dataclasses import replace

    if devices == devices_per_run(launcher):
        return launcher
    return replace(launcher, gpus_per_run=devices, runs_per_gpu=1)


def runs_on_gpus(launcher: LauncherConfig) -> bool:
    """Whether the cells are planned as GPU runs (bf16 compute): a GPU memory is declared, or Slurm tasks get
    GPUs."""
    if launcher.device == "cpu":
        return False
    return launcher.gpu_memory_gb is not None or (launcher.kind == "slurm" and launcher.gpus_per_task > 0)
