"""A sweep's worker processes, for either launcher (the local one, sweep/local.py, and each Slurm array task,
sweep/slurm.py): which cells are still to do, the worker slots a launcher config gives on this machine, and the
workers themselves.

Each worker walks the plan in order and trains every cell it can claim (claims.py), one after another, in one
Python process (a fresh process per cell would cost ~4 s of start-up, more than a small cell). All state is in the
results directory, so a second launch skips completed cells, resumes interrupted ones from their checkpoints and,
with `retry_failed`, retries failed ones; two launchers on the same directory train each cell once.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from scaling import branching, claims, store
from scaling.config import from_dict
from scaling.sweep.launcher import LauncherConfig
from scaling.sweep.plan import SweepPlan


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
    return record["status"] != "failed" or store.was_interrupted(record) or retry_failed


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
def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (even by SIGKILL): a worker when its launcher dies,
    an external trainer when its worker dies; elsewhere, the worker polls."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _worker(worker: str, env: dict, threads: int | None, cells: list[tuple[str, str, dict, dict]], results_dir: str,
            sweep: str, retry_failed: bool, stale_after: float, events, procs_per_run: int = 1,
            after: dict | None = None, command: str | None = None) -> None:
    die_with_parent()
    parent = os.getppid()
    os.environ.update(env)
    from scaling import cpu_blas

    cpu_blas.enable()  # before torch loads (AMD CPUs: MKL's AVX-512 kernels)
    import torch

    from scaling.scheduler import handle_signals

    handle_signals()  # SIGTERM: checkpoint now; SIGUSR2: checkpoint and stop (a batch job's warning)
    if threads:
        torch.set_num_threads(threads)
    try:
        _work_through(worker, cells, Path(results_dir), sweep, retry_failed, stale_after, events, parent,
                      procs_per_run, after or {}, command)
    except KeyboardInterrupt:
        return  # Ctrl-C: the cell's record says 'interrupted' and its claim is released; the launcher reports it


WAIT_POLL_S = 1.0
"""How often a worker with only waiting cells (their predecessor's stable state not yet saved) looks again."""


def _work_through(worker: str, cells, results: Path, sweep: str, retry_failed: bool, stale_after: float, events,
                  parent: int, procs_per_run: int = 1, after: dict | None = None, command: str | None = None) -> None:
    """Train the cells in order, each one this worker can claim. A branching cell (scaling/branching.py, `after`:
    run id -> (predecessor's run id, family, its decay start)) waits while its predecessor is still to reach its
    decay start, here or in another worker, and is taken up again once the state it starts from is saved."""
    from scaling.scheduler import stop_requested

    owner = claims.new_owner(worker)
    pending = list(cells)
    while pending:
        waiting = []
        for i, cell in enumerate(pending):
            if os.getppid() != parent or stop_requested():
                return  # launcher gone (non-Linux fallback), or asked to stop (a batch job's warning signal)
            queued = {c[0] for c in waiting} | {c[0] for c in pending[i + 1:]}
            if _waits(cell[0], after or {}, results, sweep, stale_after, queued):
                waiting.append(cell)
                continue
            if not _one_cell(worker, owner, cell, results, sweep, retry_failed, stale_after, events, procs_per_run,
                             command):
                return
        if len(waiting) == len(pending):
            time.sleep(WAIT_POLL_S)
        pending = waiting


def _waits(run_id: str, after: dict, results: Path, sweep: str, stale_after: float, queued: set[str]) -> bool:
    """Whether a branching cell should wait: its predecessor is neither final nor has saved its stable state, and
    is being trained (a live claim) or is still queued here."""
    if run_id not in after:
        return False
    before, key, step = after[run_id]
    if branching.stable_path(results, sweep, key, step).exists():
        return False
    try:
        if not cell_todo(results, sweep, before, retry_failed=False):
            return False
    except store.StoreError:
        return False
    seen = claims.read_claim(store.claim_path(results, sweep, before))
    return (seen is not None and claims.is_live(*seen, stale_after=stale_after)) or before in queued


def _one_cell(worker: str, owner: dict, cell: tuple[str, str, dict, dict], results: Path, sweep: str,
              retry_failed: bool, stale_after: float, events, procs_per_run: int, command: str | None = None) -> bool:
    """Claim and train one cell (skipped when done or claimed by another), here or by the user's trainer
    (`command`: launcher=command, scaling/sweep/command.py); False when the worker must stop."""
    from rich.console import Console

    from scaling.scheduler import Preempted
    from scaling.train import train

    run_id, name, run_dict, derived = cell
    try:
        if not cell_todo(results, sweep, run_id, retry_failed):
            return True
    except store.StoreError as e:
        events.put(("failed", worker, run_id, name, str(e), ""))
        return True
    claim = store.claim_path(results, sweep, run_id)
    if not claims.try_claim(claim, owner, stale_after):
        return True
    log = store.log_path(results, sweep, run_id)
    try:
        if not cell_todo(results, sweep, run_id, retry_failed):  # finished by another launcher meanwhile
            return True
        events.put(("start", worker, run_id, name, "", str(log)))
        with store.open_log(log) as f, _redirect_fds(f):
            print(f"=== {name} ({run_id}) worker {worker} pid {os.getpid()} {time.ctime()}", flush=True)
            try:
                if command:
                    from scaling.sweep.command import run_cell

                    with claims.Heartbeat(claim):
                        record = run_cell(command, run_dict, derived, name, results, sweep, run_id)
                elif procs_per_run > 1:
                    with claims.Heartbeat(claim):
                        record = _train_with_torchrun(run_dict, name, procs_per_run, results, sweep, run_id,
                                                      owner)
                else:  # train() checks this worker still holds the claim, and heartbeats it
                    record = train(from_dict(run_dict), show_progress=False, owner=owner, name=name,
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
        return False
    except Exception as e:
        events.put(("failed", worker, run_id, name, f"{type(e).__name__}: {e}".splitlines()[0], str(log)))
    finally:
        claims.release(claim, owner)
    return True


def _train_with_torchrun(run_dict: dict, name: str, nproc: int, results: Path, sweep: str, run_id: str,
                         owner: dict) -> dict:
    """Train one cell on `nproc` processes (torchrun, one node) and return its record (rank 0 wrote it).

    torchrun's own agent ignores SIGTERM and SIGUSR2 (dispositions set to ignore survive exec): the training
    processes receive the scheduler's signals themselves and stop together (scaling/distributed.py)."""
    import json
    import subprocess

    run_file = store.run_file_path(results, sweep, run_id)
    store.atomic_write_text(run_file, json.dumps({"run": run_dict, "name": name, "owner": owner}))
    sys.stdout.flush()
    import torch

    threads = torch.get_num_threads()  # this worker's share of the cores, already divided by the processes per run
    code = subprocess.run(torchrun_command(run_file, nproc), preexec_fn=ignore_scheduler_signals,
                          env={**os.environ, "OMP_NUM_THREADS": str(threads)}).returncode
    record = finished_record(results, sweep, run_id, code)
    run_file.unlink(missing_ok=True)
    return record


def torchrun_command(run_file: Path, nproc: int, nodes: int = 1, endpoint: str | None = None,
                     rendezvous_id: str | None = None) -> list[str]:
    """torchrun training the cell of `run_file` on `nproc` processes here: alone (`--standalone`), or as one of
    `nodes` agents meeting at `endpoint` (host:port, c10d rendezvous `rendezvous_id`)."""
    where = ["--standalone"] if nodes == 1 else [f"--nnodes={nodes}", "--rdzv_backend=c10d",
                                                 f"--rdzv_endpoint={endpoint}", f"--rdzv_id={rendezvous_id}"]
    return [sys.executable, "-m", "torch.distributed.run", *where, f"--nproc_per_node={nproc}",
            "-m", "scaling.sweep.run_cell", str(run_file)]


def ignore_scheduler_signals() -> None:
    """For torchrun's agent (preexec_fn): its own handlers would tear the ranks down on SIGTERM or SIGUSR2; the
    ranks install their own (scheduler.handle_signals), so they still hear them."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def finished_record(results: Path, sweep: str, run_id: str, code: int) -> dict:
    """The record a multi-process cell left: final, or Preempted when it stopped on a scheduler's signal; a
    RuntimeError when the processes ended without either."""
    from scaling.scheduler import Preempted

    rec_path = store.record_path(results, sweep, run_id)
    record = store.read_record(rec_path) if rec_path.exists() else None
    if record is not None and store.was_interrupted(record):
        raise Preempted(record["error"].get("reason", "preempted"))
    if record is None or record["status"] not in store.FINAL_STATUSES:
        raise RuntimeError(f"torchrun exited with code {code} before the run finished (its log: above)")
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



# ---- slots -----------------------------------------------------------------------------------------------------
def worker_slots(launcher: LauncherConfig) -> list[tuple[str, dict, int | None]]:
    """(worker name, environment, torch threads) per worker: one per GPU group of `gpus_per_run` x
    `runs_per_gpu`, else `workers` CPU workers (each with cores / (workers x gpus_per_run) threads)."""
    n_gpus = 0
    if launcher.device != "cpu":
        import torch

        n_gpus = torch.cuda.device_count()
    per_run = max(1, launcher.gpus_per_run)
    if n_gpus:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = (visible.split(",") if visible else [str(i) for i in range(n_gpus)])[:n_gpus]
        groups = [",".join(ids[i: i + per_run]) for i in range(0, len(ids) - per_run + 1, per_run)]
        return [(f"gpu{g.replace(',', '+')}.{r}", {"CUDA_VISIBLE_DEVICES": g}, None)
                for g in groups for r in range(launcher.runs_per_gpu)]
    threads = max(1, cpu_cores() // (launcher.workers * per_run))
    return [(f"cpu{i}", {"CUDA_VISIBLE_DEVICES": ""}, threads) for i in range(launcher.workers)]


def cpu_cores() -> int:
    """Cores this process may use (a Slurm allocation's, else the affinity mask's)."""
    return int(os.environ.get("SLURM_CPUS_PER_TASK") or 0) or (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def parallel_cells(launcher: LauncherConfig) -> int:
    """Cells that truly train at once: one per worker slot, but on CPU no more than the cores allow (workers
    beyond the core count share cores and each goes slower)."""
    slots = worker_slots(launcher)
    if slots and slots[0][2] is not None:  # CPU workers: threads each
        return max(1, min(len(slots), cpu_cores() // (slots[0][2] * max(1, launcher.gpus_per_run))))
    return len(slots)


def start_workers(slots, cells: list[tuple[str, str, dict, dict]], results_dir: Path, sweep: str,
                  launcher: LauncherConfig, retry_failed: bool, stale_after: float = claims.STALE_AFTER_S,
                  after: dict | None = None):
    """Start one spawned worker process per slot, each walking `cells` (run id, name, run dict, the plan's derived
    quantities) in order (launcher=command: each runs launcher.command per cell); returns
    (processes, event queue). Events are (kind, worker, run_id, name, info, log) with kind start, completed,
    diverged, failed or preempted. `stale_after`: seconds without a heartbeat after which a claim may be taken.
    `after`: the branching cells' predecessors (branching.predecessors), whose stable states they wait for."""
    ctx = mp.get_context("spawn")
    events = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(name, env, threads, cells, str(results_dir), sweep, retry_failed,
                                               stale_after, events, launcher.gpus_per_run, after, launcher.command),
                         daemon=False)
             for name, env, threads in slots]
    for p in procs:
        p.start()
    return procs, events
