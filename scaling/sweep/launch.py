"""Run a sweep's cells on one machine: long-lived worker processes, one per GPU (or several), or N on CPU.

Each worker walks the plan in order and trains every cell it can claim (claims.py), one after another, in one
Python process (a fresh process per cell would cost ~4 s of start-up, more than a small cell). The launcher only
starts workers and shows progress; all state is in the results directory, so re-running the same command skips
completed cells, resumes interrupted ones from their checkpoints and, with `retry_failed`, retries failed ones;
two launchers on the same directory train each cell once.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import queue
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from scaling import claims, store, tracking
from scaling.config import from_dict, to_dict
from scaling.sweep.plan import SweepPlan


@dataclass
class LaunchOptions:
    workers: int = 1
    """Worker processes on CPU (each gets cores / workers threads)."""
    runs_per_gpu: int = 1
    """Workers per GPU (several small runs packed on one GPU)."""
    retry_failed: bool = False
    """Also retry cells whose last attempt failed (resuming from their checkpoints)."""
    stale_after: float = claims.STALE_AFTER_S
    """Seconds without a heartbeat after which another launcher may take a cell over."""
    device: str = "auto"
    """'auto' (every visible GPU, else CPU) or 'cpu'."""
    procs_per_run: int = 1
    """Processes (GPUs) per cell; more than 1 trains each cell with torchrun, data parallel (on CPU: gloo)."""


def cell_todo(results_dir: Path, sweep: str, run_id: str, retry_failed: bool) -> bool:
    """Whether a cell still needs training (judged from its record alone); an unreadable record raises StoreError
    (its cell is never trained over)."""
    path = store.record_path(results_dir, sweep, run_id)
    return _record_todo(store.read_record(path) if path.exists() else None, retry_failed)


def _record_todo(record: dict | None, retry_failed: bool) -> bool:
    if record is None:
        return True
    if record["status"] in store.FINAL_STATUSES:
        return False
    interrupted = (record.get("error") or {}).get("kind") == "interrupted"  # Ctrl-C: resume, not a failure
    return record["status"] != "failed" or interrupted or retry_failed


def cells_to_run(plan: SweepPlan, results_dir: Path, retry_failed: bool, report) -> tuple[list, int, int]:
    """(cells still to train, cells whose last attempt failed and are not retried, cells whose record cannot be
    read): each unreadable record is reported with `report(message)` (one line naming the file) and its cell left
    alone."""
    todo, failed, unreadable = [], 0, 0
    for c in plan.cells:
        path = store.record_path(results_dir, plan.name, c.run_id)
        try:
            record = store.read_record(path) if path.exists() else None  # read once per cell
            if _record_todo(record, retry_failed):
                todo.append(c)
            elif record["status"] == "failed":
                failed += 1
        except store.StoreError as e:
            unreadable += 1
            report(f"skipping cell {c.name}: {e}")
    return todo, failed, unreadable


# ---- worker process ------------------------------------------------------------------------------------------
def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when its launcher dies (even by SIGKILL); elsewhere, poll."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _worker(worker: str, env: dict, threads: int | None, cells: list[tuple[str, str, dict]], results_dir: str,
            sweep: str, retry_failed: bool, stale_after: float, events, procs_per_run: int = 1) -> None:
    _die_with_parent()
    parent = os.getppid()
    os.environ.update(env)
    from scaling import cpu_blas

    cpu_blas.enable()  # before torch loads (AMD CPUs: MKL's AVX-512 kernels)
    import torch

    from scaling.train import handle_scheduler_signals

    handle_scheduler_signals()  # SIGTERM: checkpoint now; SIGUSR2: checkpoint and stop (a batch job's warning)
    if threads:
        torch.set_num_threads(threads)
    try:
        _work_through(worker, cells, Path(results_dir), sweep, retry_failed, stale_after, events, parent,
                      procs_per_run)
    except KeyboardInterrupt:
        return  # Ctrl-C: the cell's record says 'interrupted' and its claim is released; the launcher reports it


def _work_through(worker: str, cells, results: Path, sweep: str, retry_failed: bool, stale_after: float, events,
                  parent: int, procs_per_run: int = 1) -> None:
    from rich.console import Console

    from scaling.train import Preempted, stop_requested, train

    owner = claims.new_owner(worker)
    for run_id, name, run_dict in cells:
        if os.getppid() != parent or stop_requested():
            return  # launcher gone (non-Linux fallback), or asked to stop (a batch job's warning signal)
        try:
            if not cell_todo(results, sweep, run_id, retry_failed):
                continue
        except store.StoreError as e:
            events.put(("failed", worker, run_id, name, str(e), ""))
            continue
        claim = store.claim_path(results, sweep, run_id)
        if not claims.try_claim(claim, owner, stale_after):
            continue
        log = store.log_path(results, sweep, run_id)
        try:
            if not cell_todo(results, sweep, run_id, retry_failed):  # finished by another launcher meanwhile
                continue
            events.put(("start", worker, run_id, name, "", str(log)))
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "a") as f, _redirect_fds(f):
                print(f"=== {name} ({run_id}) worker {worker} pid {os.getpid()} {time.ctime()}", flush=True)
                try:
                    if procs_per_run > 1:
                        with claims.Heartbeat(claim):
                            record = _train_with_torchrun(run_dict, procs_per_run, results, sweep, run_id, owner)
                    else:  # train() checks this worker still holds the claim, and heartbeats it
                        record = train(from_dict(run_dict), show_progress=False, owner=owner,
                                       console=Console(file=sys.stdout, force_terminal=False, width=120))
                except BaseException:
                    traceback.print_exc()
                    sys.stdout.flush()
                    raise
                res = record.get("results") or {}
                print(f"--- {record['status']}: val loss {res.get('val_loss')}, {res.get('steps_done')} steps, "
                      f"{res.get('train_s') or 0:.1f} s of training {time.ctime()}", flush=True)
            val = (record.get("results") or {}).get("val_loss")
            events.put((record["status"], worker, run_id, name, "" if val is None else f"{val:.4f}", str(log)))
        except Preempted as e:
            events.put(("preempted", worker, run_id, name, str(e), str(log)))
            return
        except Exception as e:
            events.put(("failed", worker, run_id, name, f"{type(e).__name__}: {e}".splitlines()[0], str(log)))
        finally:
            claims.release(claim, owner)


def _train_with_torchrun(run_dict: dict, nproc: int, results: Path, sweep: str, run_id: str, owner: dict) -> dict:
    """Train one cell on `nproc` processes (torchrun, one node) and return its record (rank 0 wrote it).

    torchrun's own agent ignores SIGTERM and SIGUSR2 (dispositions set to ignore survive exec): the training
    processes receive the scheduler's signals themselves and stop together (scaling/distributed.py)."""
    import json
    import subprocess

    from scaling.train import Preempted

    run_file = store.run_file_path(results, sweep, run_id)
    store.atomic_write_text(run_file, json.dumps({"run": run_dict, "owner": owner}))

    def ignore_scheduler_signals() -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "scaling.sweep.run_cell", str(run_file)]
    sys.stdout.flush()
    import torch

    threads = torch.get_num_threads()  # this worker's share of the cores, already divided by the processes per run
    code = subprocess.run(cmd, preexec_fn=ignore_scheduler_signals,
                          env={**os.environ, "OMP_NUM_THREADS": str(threads)}).returncode
    rec_path = store.record_path(results, sweep, run_id)
    record = store.read_record(rec_path) if rec_path.exists() else None
    error = (record or {}).get("error") or {}
    if record is not None and record["status"] == "failed" and error.get("kind") == "interrupted":
        raise Preempted(error.get("reason", "preempted"))
    if record is None or record["status"] not in store.FINAL_STATUSES:
        raise RuntimeError(f"torchrun exited with code {code} before the run finished (its log: above)")
    run_file.unlink(missing_ok=True)
    return record


class _redirect_fds:
    """Send this process's stdout and stderr (fd level: Python, C libraries, child processes) to a file."""

    def __init__(self, f):
        self.f = f

    def __enter__(self):
        sys.stdout.flush()
        sys.stderr.flush()
        self.saved = (os.dup(1), os.dup(2))
        os.dup2(self.f.fileno(), 1)
        os.dup2(self.f.fileno(), 2)

    def __exit__(self, *exc):
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self.saved[0], 1)
        os.dup2(self.saved[1], 2)
        os.close(self.saved[0])
        os.close(self.saved[1])


class _stop_workers_on_sigterm:
    """While the launcher runs (main thread only): SIGTERM to it asks every worker to save a checkpoint at its next
    step and stop (SIGUSR2, as a batch job's warning does), instead of dying and taking them down unsaved."""

    def __init__(self, procs, console):
        self.procs, self.console, self.received, self.previous = procs, console, False, None
        import threading

        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame) -> None:
        if not self.received:
            self.console.print("SIGTERM: the workers save a checkpoint at their next step and stop; run the same "
                               "command again to resume")
        self.received = True
        for p in self.procs:
            if p.is_alive():
                try:
                    os.kill(p.pid, signal.SIGUSR2)
                except ProcessLookupError:
                    pass

    def restore(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


# ---- launcher ------------------------------------------------------------------------------------------------
def worker_slots(options: LaunchOptions) -> list[tuple[str, dict, int | None]]:
    """(worker name, environment, torch threads) per worker: one per GPU x runs_per_gpu, else N CPU workers."""
    n_gpus = 0
    if options.device != "cpu":
        import torch

        n_gpus = torch.cuda.device_count()
    per_run = max(1, options.procs_per_run)
    if n_gpus:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = (visible.split(",") if visible else [str(i) for i in range(n_gpus)])[:n_gpus]
        groups = [",".join(ids[i: i + per_run]) for i in range(0, len(ids) - per_run + 1, per_run)]
        return [(f"gpu{g.replace(',', '+')}.{r}", {"CUDA_VISIBLE_DEVICES": g}, None)
                for g in groups for r in range(options.runs_per_gpu)]
    threads = max(1, cpu_cores() // (options.workers * per_run))
    return [(f"cpu{i}", {"CUDA_VISIBLE_DEVICES": ""}, threads) for i in range(options.workers)]


def cpu_cores() -> int:
    """Cores this process may use (a Slurm allocation's, else the affinity mask's)."""
    return int(os.environ.get("SLURM_CPUS_PER_TASK") or 0) or (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def parallel_cells(options: LaunchOptions) -> int:
    """Cells that truly train at once: one per worker slot, but on CPU no more than the cores allow (workers
    beyond the core count share cores and each goes slower)."""
    slots = worker_slots(options)
    if slots and slots[0][2] is not None:  # CPU workers: threads each
        return max(1, min(len(slots), cpu_cores() // (slots[0][2] * max(1, options.procs_per_run))))
    return len(slots)


def start_workers(slots, cells: list[tuple[str, str, dict]], results_dir: Path, sweep: str, options: LaunchOptions):
    """Start one spawned worker process per slot, each walking `cells` (run id, name, run dict) in order; returns
    (processes, event queue). Events are (kind, worker, run_id, name, info, log) with kind start, completed,
    diverged, failed or preempted."""
    ctx = mp.get_context("spawn")
    events = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(name, env, threads, cells, str(results_dir), sweep,
                                               options.retry_failed, options.stale_after, events,
                                               options.procs_per_run), daemon=False)
             for name, env, threads in slots]
    for p in procs:
        p.start()
    return procs, events


def write_plan(plan: SweepPlan, results_dir: Path) -> Path:
    path = store.plan_path(results_dir, plan.name)
    store.atomic_write_text(path, plan.to_json())
    return path


def launch(plan: SweepPlan, results_dir: Path, options: LaunchOptions, console=None,
           show_progress: bool = True) -> dict:
    """Train every cell still to do; returns counts by final state. Failed cells are reported as they fail."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = console or Console(stderr=True)
    results_dir = Path(results_dir)
    store.check_writable(results_dir)
    write_plan(plan, results_dir)
    claims.tidy(results_dir, plan.name)
    todo, failed, unreadable = cells_to_run(plan, results_dir, options.retry_failed,
                                            lambda message: console.print(f"[red]![/] {message}", highlight=False,
                                                                          soft_wrap=True))
    already = len(plan.cells) - len(todo) - failed - unreadable
    if not todo:
        console.print(f"sweep {plan.name}: nothing to run: {already} of {len(plan.cells)} cells already done"
                      + (f", {failed} failed (retry them with --retry-failed)" if failed else "")
                      + (f", {unreadable} with unreadable records (named above)" if unreadable else ""))
        return {"launched": 0, "unreadable": unreadable}
    slots = worker_slots(options)[: len(todo)]
    console.print(f"sweep {plan.name}: {len(todo)} of {len(plan.cells)} cells to run ({already} done), "
                  f"{len(slots)} worker(s): {', '.join(s[0] for s in slots)}")
    wandb_folder = store.wandb_dir(results_dir, plan.name)
    tracking.reset_unreachable(wandb_folder)  # this launch tries the network again
    wandb_announced = False
    procs, events = start_workers(slots, [(c.run_id, c.name, to_dict(c.run)) for c in todo], results_dir,
                                  plan.name, options)
    terminated = _stop_workers_on_sigterm(procs, console)

    counts = {"completed": 0, "diverged": 0, "failed": 0, "preempted": 0}
    running: dict[str, str] = {}
    tokens_of = {c.run_id: c.plan.tokens for c in todo}
    tokens_total, tokens_done, t0 = sum(tokens_of.values()), 0, time.time()
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[state]}"), TimeElapsedColumn(), TextColumn("ETA {task.fields[eta]}")]
    try:
        with Progress(*columns, console=console, disable=not show_progress) as progress:
            task = progress.add_task(plan.name, total=len(todo), state="", eta="-")
            while True:
                try:
                    kind, worker, run_id, name, info, log = events.get(timeout=0.2)
                except queue.Empty:
                    if not any(p.is_alive() for p in procs):
                        break
                    continue
                if not wandb_announced and (notice := tracking.unreachable_notice(wandb_folder)):
                    wandb_announced = True
                    console.print(f"[yellow]warning:[/] {notice}", highlight=False, soft_wrap=True)
                if kind == "start":
                    running[run_id] = name
                else:
                    running.pop(run_id, None)
                    counts[kind] = counts.get(kind, 0) + 1
                    tokens_done += tokens_of.get(run_id, 0)
                    if kind == "failed":
                        console.print(f"[red]✗ failed[/] {name} ({run_id}) on {worker}: {info}"
                                      + (f" — log {log}" if log else ""))
                    elif kind == "diverged":
                        console.print(f"[yellow]⚠ diverged[/] {name} ({run_id}) — log {log}")
                    elif kind == "preempted":
                        console.print(f"[magenta]⏸ stopped[/] {name} ({run_id}): {info}")
                finished = sum(counts.values())
                elapsed = time.time() - t0
                eta = elapsed * (tokens_total - tokens_done) / tokens_done if tokens_done else None
                progress.update(task, completed=finished,
                                state=f"done {counts['completed']} · running {len(running)} · failed "
                                      f"{counts['failed']} · diverged {counts['diverged']}",
                                eta="-" if eta is None else f"{eta:.0f}s")
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
        terminated.restore()
    counts["launched"], counts["unreadable"] = len(todo), unreadable
    counts["terminated"] = terminated.received
    counts["skipped"] = len(todo) - sum(counts[k] for k in ("completed", "diverged", "failed", "preempted"))
    return counts
