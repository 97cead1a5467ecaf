"""Run a sweep's cells on a Slurm cluster: submitit job arrays whose tasks each train a few cells.

`submit` splits the cells still to do (not done, not already queued or running in a live job) into job arrays, one
per GPU count per cell (launcher.max_gpus_per_run) and length class (Slurm gives an array one time limit), deals
each array's cells to its tasks, balancing their estimated times (budget FLOPs), and submits it. A deal is a first
share, not a fence: each task trains its own cells first, then the array's other cells, longest first, that no lane
has claimed yet (a work queue over the claims), so no lane idles while work remains; `scaling status` shows each
cell under the task it was dealt to until a lane claims it. Each task (`SweepTask`) trains its cells in `lanes`
worker processes (sweep/workers.py: several per GPU with `runs_per_gpu`), so claims, records, per-cell logs and
resume work exactly as with the local launcher. The results directory on the shared file system stays the only
source of truth; the submissions index (slurm_queue.py) only adds job ids to `scaling status`.

Pre-emption and time limits: Slurm sends SIGUSR2 `signal_delay_s` before the limit (and submitit's interrupt does
too). The workers checkpoint at the next step and stop; the task's `checkpoint` waits for them and submitit
requeues the task, whose next run resumes each cell from its checkpoint. SIGTERM alone (scancel, or a cluster's
own pre-emption) makes the workers checkpoint and go on until killed. A cancelled task's cells are shown as failed
by `scaling status` and picked up again by the next `scaling sweep` (with or without --retry-failed).
"""

from __future__ import annotations

import math
import os
import queue
import signal
import subprocess
import sys
import time
from pathlib import Path

from scaling import claims, scheduler, store, tracking
from scaling.config import to_dict
from scaling.sweep import slurm_queue
from scaling.sweep.launcher import LauncherConfig, for_devices, task_workers
from scaling.sweep.plan import Cell, SweepPlan
from scaling.sweep.workers import cells_to_run, start_workers, worker_slots


class SlurmError(RuntimeError):
    """Slurm or submitit is missing, or a submission was refused; the message says what to do."""


def lanes_per_task(launcher: LauncherConfig) -> int:
    """Cells one array task trains side by side."""
    gpus = max(1, launcher.gpus_per_task)
    return max(1, gpus // launcher.gpus_per_run) * launcher.runs_per_gpu


def deal_cells(cells: list[Cell], launcher: LauncherConfig) -> list[list[Cell]]:
    """Cells grouped into array tasks of at most lanes x cells_per_lane cells, balancing estimated time (budget
    FLOPs, tokens x M): largest first, each to the least loaded task with room. In a task, largest first too."""
    import heapq

    if not cells:
        return []
    per_task = lanes_per_task(launcher) * launcher.cells_per_lane
    n_tasks = math.ceil(len(cells) / per_task)
    tasks: list[list[Cell]] = [[] for _ in range(n_tasks)]
    open_tasks = [(0.0, i) for i in range(n_tasks)]  # (load, task) of the tasks with room: a heap, O(n log n)
    for cell in sorted(cells, key=lambda c: (-cell_flops(c), c.index)):
        load, i = heapq.heappop(open_tasks)
        tasks[i].append(cell)
        if len(tasks[i]) < per_task:
            heapq.heappush(open_tasks, (load + cell_flops(cell), i))
    return tasks


def cell_flops(cell: Cell) -> float:
    return cell.plan.tokens * cell.plan.counts.M


TIME_MARGIN = 1.5
"""A cell's own time limit (launcher.time_per_cell_min=None, GPU tasks) is its estimate times this (the MFU is an
assumption until measured) ..."""
STARTUP_MIN = 10
"""... plus this many minutes (a task's start-up, data, compilation, the last checkpoint)."""
CPU_CELL_MIN = 60
"""A cell's limit on CPU-only tasks when launcher.time_per_cell_min is None (no estimate to go by)."""


LENGTH_CLASS_RATIO = 2.0
"""Slurm gives a job array one time limit: cells whose limits differ more than this factor go to separate arrays,
so that short cells do not reserve the long ones' limit."""


def cell_minutes(plan: SweepPlan, cells: list[Cell], hours: dict[str, float] | None = None) -> dict[str, int]:
    """Each cell's time limit, minutes: launcher.time_per_cell_min when set; else, on GPU tasks, its estimated
    wall time (FLOPs with the head at its MFU, over its GPUs, times the cells packed on each: _gpu_share) x
    TIME_MARGIN + STARTUP_MIN, and CPU_CELL_MIN on CPU-only tasks."""
    from scaling.sweep.estimate import cell_gpu_hours

    launcher = plan.config.launcher
    if launcher.time_per_cell_min is not None:
        return {c.run_id: launcher.time_per_cell_min for c in cells}
    if not launcher.gpus_per_task:
        return {c.run_id: CPU_CELL_MIN for c in cells}
    hours = cell_gpu_hours(plan) if hours is None else hours
    return {c.run_id: math.ceil(hours[c.run_id] * 60 * _gpu_share(c, launcher) * TIME_MARGIN + STARTUP_MIN)
            for c in cells}


def _gpu_share(cell: Cell, launcher: LauncherConfig) -> float:
    """Wall hours per GPU-hour of a cell: over its GPUs, times the cells it shares each GPU with (runs_per_gpu:
    packed cells split the GPU's FLOPs)."""
    devices = cell.devices_per_node(launcher)
    packed = launcher.runs_per_gpu if devices == launcher.gpus_per_run else 1
    return packed / (devices * launcher.nodes_per_run)


def task_minutes(tasks: list[list[Cell]], launcher: LauncherConfig, limits: dict[str, int] | None = None) -> int:
    """Slurm time limit of an array (one for all its tasks): the most any lane of a task runs in turn, its cells'
    limits (`limits`, run id -> minutes; default launcher.time_per_cell_min, or CPU_CELL_MIN, each) dealt to the
    task's lanes longest first, each to the least loaded."""
    lanes = lanes_per_task(launcher)
    per_cell = launcher.time_per_cell_min or CPU_CELL_MIN
    most = 0
    for task in tasks:
        load = [0] * lanes
        for minutes in sorted(((limits or {}).get(c.run_id, per_cell) for c in task), reverse=True):
            load[load.index(min(load))] += minutes
        most = max(most, max(load))
    return most


def arrays(plan: SweepPlan, cells: list[Cell],
           limits: dict[str, int] | None = None) -> list[tuple[LauncherConfig, list[Cell]]]:
    """The job arrays that submitting `cells` takes, each (its launcher, its cells): one per GPU count per cell
    (Cell.devices_per_node; its launcher runs cells of that many GPUs), split into length classes by their limits
    (`limits`, default cell_minutes; longest first, a new array where a cell's limit falls below the class's
    longest / LENGTH_CLASS_RATIO)."""
    launcher = plan.config.launcher
    limits = cell_minutes(plan, cells) if limits is None else limits
    by_devices: dict[int, list[Cell]] = {}
    for c in cells:
        by_devices.setdefault(c.devices_per_node(launcher), []).append(c)
    out = []
    for devices in sorted(by_devices):
        ordered = sorted(by_devices[devices], key=lambda c: (-limits[c.run_id], c.index))
        group: list[Cell] = []
        for c in ordered:
            if group and limits[c.run_id] * LENGTH_CLASS_RATIO < limits[group[0].run_id]:
                out.append((for_devices(launcher, devices * launcher.nodes_per_run), group))
                group = []
            group.append(c)
        out.append((for_devices(launcher, devices * launcher.nodes_per_run), group))
    return out


def array_plan(plan: SweepPlan, cells: list[Cell] | None = None) -> dict:
    """What submitting `cells` (default: all the plan's) would ask Slurm for, as `scaling sweep --dry-run` shows
    it: the job arrays (`arrays`), each with its tasks, cells and lanes per task, GPUs per cell and time limit;
    in all, the GPU-hours one round of limits reserves, the GPU-hours the cells are estimated to use (their FLOPs
    with the head at their MFU; None on CPU-only tasks), and the cells estimated to need longer than their limit
    allows over max_requeues + 1 runs."""
    from scaling.sweep.estimate import cell_gpu_hours

    launcher = plan.config.launcher
    cells = plan.cells if cells is None else cells
    if not cells:
        return {"tasks": 0, "arrays": []}
    task_gpus = launcher.gpus_per_task * launcher.nodes_per_run
    hours = cell_gpu_hours(plan) if task_gpus else {}
    limits = cell_minutes(plan, cells, hours)
    out = []
    for array_launcher, array_cells in arrays(plan, cells, limits):
        tasks = deal_cells(array_cells, array_launcher)
        minutes = task_minutes(tasks, array_launcher, limits)
        out.append({"tasks": len(tasks), "cells": len(array_cells), "most_cells": max(len(t) for t in tasks),
                    "lanes": lanes_per_task(array_launcher), "devices": array_launcher.gpus_per_run,
                    "time_min": minutes, "reserved_gpu_h": len(tasks) * minutes / 60 * task_gpus})
    too_long = [c.name for c in cells if task_gpus and hours[c.run_id] * _gpu_share(c, launcher)
                > limits[c.run_id] * (launcher.max_requeues + 1) / 60]
    return {"arrays": out, "tasks": sum(a["tasks"] for a in out), "most_cells": max(a["most_cells"] for a in out),
            "lanes": out[0]["lanes"], "time_min": max(a["time_min"] for a in out),
            "reserved_gpu_h": sum(a["reserved_gpu_h"] for a in out),
            "used_gpu_h": sum(hours[c.run_id] for c in cells) if task_gpus else None,
            "too_long": too_long, "cell_min": (min(limits.values()), max(limits.values()))}


def require_slurm() -> None:
    """Fail early, before anything is planned on the cluster, when this machine cannot submit."""
    import shutil

    try:
        import submitit  # noqa: F401
    except ImportError:
        raise SlurmError("launcher=slurm needs submitit: pip install -e '.[slurm]'") from None
    if shutil.which("sbatch") is None or shutil.which("squeue") is None:
        raise SlurmError("launcher=slurm but this machine has no Slurm (sbatch/squeue not on PATH): run on the "
                         "cluster's login node, or drop launcher=slurm to train here") from None


class SweepTask:
    """One array task: trains its cells in worker processes. submitit calls it in the job; `checkpoint` is what
    submitit calls on the warning signal before it requeues the task."""

    def __init__(self, results_dir: str, sweep: str, workers: LauncherConfig, retry_failed: bool, stop_wait_s: float):
        self.results_dir, self.sweep, self.workers = results_dir, sweep, workers
        self.retry_failed, self.stop_wait_s = retry_failed, stop_wait_s
        self._procs: list = []

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_procs"] = []  # processes of this run; the requeued run starts its own
        return state

    def __call__(self, cells: list[tuple[str, str, dict, dict]]) -> dict:
        from scaling import cpu_blas

        cpu_blas.enable()  # this task's own process (its workers enable it in theirs)
        if self.workers.nodes_per_run > 1:
            return self._across_nodes(cells)
        slots = worker_slots(self.workers)[: max(1, len(cells))]
        print(f"task {scheduler.batch_job_id()} (restart {scheduler.restart_count()}): {len(cells)} cells on "
              f"{', '.join(s[0] for s in slots)}", flush=True)
        self._procs, events = start_workers(slots, cells, Path(self.results_dir), self.sweep, self.workers,
                                            self.retry_failed)
        counts: dict[str, int] = {}
        while True:
            try:
                kind, worker, run_id, name, info, log = events.get(timeout=0.5)
            except queue.Empty:
                if not any(p.is_alive() for p in self._procs):
                    break
                continue
            print(f"{time.strftime('%H:%M:%S')} {kind:9s} {name} ({run_id}) on {worker} {info} {log}", flush=True)
            if kind != "start":
                counts[kind] = counts.get(kind, 0) + 1
        for p in self._procs:
            p.join()
        return counts

    def _across_nodes(self, cells: list[tuple[str, str, dict, dict]]) -> dict:
        """This job's tasks (one per node) train each cell together (sweep/multinode.py)."""
        import submitit

        from scaling.sweep.multinode import train_across_nodes

        env = submitit.JobEnvironment()
        cores = int(os.environ.get("SLURM_CPUS_PER_TASK") or os.cpu_count() or 1)
        threads = max(1, cores // self.workers.gpus_per_run) if self.workers.device == "cpu" else None
        print(f"task {scheduler.batch_job_id()} (restart {scheduler.restart_count()}): {len(cells)} cell(s) on "
              f"{env.num_tasks} nodes, this is {env.global_rank} on {env.hostname}", flush=True)
        return train_across_nodes(cells, Path(self.results_dir), self.sweep, self.workers.gpus_per_run,
                                  self.retry_failed, env.global_rank, env.num_tasks, env.hostnames[0], threads,
                                  self._procs)

    def checkpoint(self, cells):
        """On the warning signal: make every worker checkpoint and stop (bounded wait), then ask to be requeued."""
        import submitit

        print(f"{time.strftime('%H:%M:%S')} warning signal: stopping {len(self._procs)} worker(s) at their next "
              f"step", flush=True)
        for p in self._procs:
            if isinstance(p, subprocess.Popen):
                continue  # a torchrun agent of a multi-node cell: its ranks heard Slurm's signal themselves
            if p.is_alive():
                os.kill(p.pid, signal.SIGUSR2)
        deadline = time.time() + self.stop_wait_s
        for p in self._procs:
            left = max(0.0, deadline - time.time())
            if isinstance(p, subprocess.Popen):
                try:
                    p.wait(timeout=left)
                except subprocess.TimeoutExpired:
                    pass
            else:
                p.join(timeout=left)
        return submitit.helpers.DelayedSubmission(self, cells)


def todo_cells(plan: SweepPlan, results_dir: Path, retry_failed: bool, report=print) -> tuple[list[Cell], int]:
    """(cells to submit, cells already queued or running in live jobs or claimed elsewhere); a cell whose record
    cannot be read is reported (one line naming the file) and left alone."""
    from scaling.sweep.status import scheduler_view

    tasks, seen, states = scheduler_view(results_dir, plan.name, [c.run_id for c in plan.cells])
    todo, busy = [], 0
    for c in cells_to_run(plan, results_dir, retry_failed, report)[0]:
        claim = seen[c.run_id]
        if states.get(tasks.get(c.run_id, ""), "") in scheduler.ACTIVE or (
                claim and claims.is_live(*claim, job_states=states)):
            busy += 1
            continue
        todo.append(c)
    return todo, busy


def submit(plan: SweepPlan, results_dir: Path | None = None, retry_failed: bool = False) -> dict:
    """Submit the cells still to do as job arrays (`arrays`: one per GPU count per cell and length class) with the
    plan's launcher config, recording in the plan's results folder (`results_dir`, when given, must be that one);
    returns {"job": the first id, "jobs": ids, "tasks": n, "cells": n, "busy": n, "time_min": the longest limit}
    (job None when nothing needed submitting)."""
    require_slurm()
    results_dir = plan.results_folder(results_dir).resolve()  # the jobs may start in another directory
    store.write_plan(results_dir, plan.name, plan.to_json())
    claims.tidy(results_dir, plan.name)
    todo, busy = todo_cells(plan, results_dir, retry_failed, report=lambda m: print(m, file=sys.stderr))
    if not todo:
        return {"job": None, "jobs": [], "tasks": 0, "cells": 0, "busy": busy}
    tracking.reset_unreachable(store.wandb_dir(results_dir, plan.name))  # these jobs try the network again
    folder = store.slurm_jobs_dir(results_dir, plan.name)
    limits = cell_minutes(plan, todo)
    jobs, n_tasks, most_minutes = [], 0, 0
    for array_launcher, array_cells in arrays(plan, todo, limits):
        job, tasks, minutes = _submit_array(plan, array_launcher, array_cells, limits, folder, results_dir,
                                            retry_failed)
        jobs.append(job)
        n_tasks, most_minutes = n_tasks + tasks, max(most_minutes, minutes)
    return {"job": jobs[0], "jobs": jobs, "tasks": n_tasks, "cells": len(todo), "busy": busy,
            "time_min": most_minutes}


def _submit_array(plan: SweepPlan, launcher: LauncherConfig, cells: list[Cell], limits: dict[str, int], folder: Path,
                  results_dir: Path, retry_failed: bool) -> tuple[str, int, int]:
    """Submit one job array of `cells` with `launcher` (its GPUs per cell); returns (job id, tasks, minutes)."""
    import submitit

    tasks = deal_cells(cells, launcher)
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=launcher.max_requeues)
    params = {"job_name": f"scaling-{plan.name}", "time": task_minutes(tasks, launcher, limits),
              "nodes": launcher.nodes_per_run, "ntasks_per_node": 1, "cpus_per_task": launcher.cpus_per_task,
              "mem": f"{int(launcher.mem_gb * 1024)}M",
              "array_parallelism": launcher.array_parallelism, "signal_delay_s": launcher.signal_delay_s,
              "setup": list(launcher.setup), "additional_parameters": dict(launcher.sbatch)}
    if launcher.gpus_per_task:
        params["gpus_per_node"] = launcher.gpus_per_task
    for key in ("partition", "account", "qos"):
        if getattr(launcher, key):
            params[key] = getattr(launcher, key)
    executor.update_parameters(**params)
    task = SweepTask(str(results_dir), plan.name, task_workers(launcher, lanes_per_task(launcher)), retry_failed,
                     stop_wait_s=max(5.0, launcher.signal_delay_s - 10))
    longest_first = sorted(cells, key=lambda c: (-cell_flops(c), c.index))

    def queue_of(own: list[Cell]) -> list[Cell]:  # its share first, then the rest of this array's work to take
        if launcher.nodes_per_run > 1:
            return own  # a cell across nodes is its task's alone (sweep/multinode.py trains exactly its cells)
        mine = {c.run_id for c in own}
        return own + [c for c in longest_first if c.run_id not in mine]

    args = [[(c.run_id, c.name, {**to_dict(c.run), "results_dir": str(results_dir)}, c.plan.derived())
             for c in queue_of(t)] for t in tasks]
    try:
        jobs = executor.map_array(task, args)
    except Exception as e:  # sbatch refused (bad partition, account, limits): its own message says why
        raise SlurmError(f"sbatch refused the job array: {str(e).strip().splitlines()[-1][:300]}") from None
    job = jobs[0].job_id.split("_")[0]
    slurm_queue.record_submission(results_dir, plan.name, job, {j.job_id: [c.run_id for c in t]
                                                                for j, t in zip(jobs, tasks, strict=True)},
                                  {"time_min": params["time"], "lanes": lanes_per_task(launcher),
                                   "gpus_per_cell": launcher.gpus_per_run, "folder": str(folder.parent)})
    return job, len(tasks), params["time"]


def wait(results_dir: Path, sweep: str, run_ids: list[str], console=None, poll_s: float = 3.0,
         show_progress: bool = True) -> dict:
    """Follow the cells until none is queued or running; returns the final counts by state."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from scaling.sweep.status import cell_states, counts

    console = console or Console(stderr=True)
    wanted = set(run_ids)
    wandb_folder, wandb_announced = store.wandb_dir(results_dir, sweep), False
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[state]}"), TimeElapsedColumn()]
    with Progress(*columns, console=console, disable=not show_progress) as progress:
        bar = progress.add_task(sweep, total=len(wanted), state="")
        while True:
            states = [s for s in cell_states(results_dir, sweep) if s["id"] in wanted]
            n = counts(states)
            settled = n["completed"] + n["diverged"] + n["failed"]
            progress.update(bar, completed=settled, state=" · ".join(f"{k} {v}" for k, v in n.items() if v))
            if not wandb_announced and (notice := tracking.unreachable_notice(wandb_folder)):
                wandb_announced = True
                console.print(f"[yellow]warning:[/] {notice}", highlight=False, soft_wrap=True)
            if not any(s["state"] in ("running", "queued") for s in states):
                return n
            time.sleep(poll_s)

