"""One cell across several nodes (`launcher.nodes_per_run` > 1): inside a Slurm array task of one submitit task
per node, every task starts a torchrun agent for the cell and the agents meet in a c10d rendezvous on the first
node; the ranks (gpus_per_run per node) train it as one run, DDP or FSDP (train.parallel).

Task 0 is the cell's worker: it claims the cell (claims.py), announces the attempt in the cell's run file
(store.run_file_path: the run config, its claim, this job attempt), heartbeats the claim while the cell trains
and appends torchrun's output to the cell's log. The other tasks wait for that announcement (a skipped cell is
announced too) and then join. Pre-emption and time limits are those of single-node cells: Slurm's warning signal
reaches every process of the job step, the ranks checkpoint and stop at the same step (the torchrun agents
ignore it), task 0's `checkpoint` waits for its agent and submitit requeues the job, whose next attempt resumes
the cell from its checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from scaling import claims, scheduler, store
from scaling.sweep.workers import cell_todo, finished_record, ignore_scheduler_signals, torchrun_command

ANNOUNCE_WAIT_S = 600.0
"""How long a task waits for task 0 to announce a cell before giving up on it."""
PORT_BASE, PORT_SPAN = 20000, 20000
"""The rendezvous port on the first node: PORT_BASE + a hash of the attempt, modulo PORT_SPAN."""


def attempt_id() -> str:
    """This job attempt: the array task's job id and its restart count (a requeued job is a new attempt)."""
    return f"{scheduler.batch_job_id() or os.getpid()}.{scheduler.restart_count()}"


def rendezvous(head: str, attempt: str, run_id: str) -> tuple[str, str]:
    """(host:port, rendezvous id) of one cell's attempt."""
    rid = f"{attempt}-{run_id}"
    port = PORT_BASE + int(hashlib.sha256(rid.encode()).hexdigest(), 16) % PORT_SPAN
    return f"{head}:{port}", rid.replace(".", "-")


def train_across_nodes(cells: list[tuple[str, str, dict, dict]], results: Path, sweep: str, procs_per_node: int,
                       retry_failed: bool, task_rank: int, tasks: int, head: str, threads: int | None = None,
                       procs: list | None = None) -> dict:
    """Train each cell on `tasks` agents (this is agent `task_rank`; `head` is task 0's host): counts by final
    state (task 0's view; others count 'joined'). `procs` receives the running torchrun (for `checkpoint`)."""
    counts: dict[str, int] = {}
    attempt = attempt_id()
    for run_id, name, run_dict, _ in cells:
        run_file = store.run_file_path(results, sweep, run_id)
        if task_rank == 0:
            owner = _claim_and_announce(run_file, results, sweep, run_id, run_dict, name, attempt, retry_failed)
            if owner is None:
                counts["skipped"] = counts.get("skipped", 0) + 1
                continue
        elif not _announced(run_file, attempt):
            continue
        endpoint, rid = rendezvous(head, attempt, run_id)
        cmd = torchrun_command(run_file, procs_per_node, nodes=tasks, endpoint=endpoint, rendezvous_id=rid)
        env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
        print(f"{time.strftime('%H:%M:%S')} task {task_rank}/{tasks}: {name} ({run_id}) at {endpoint}", flush=True)
        if task_rank != 0:
            _run(cmd, env, None, procs)
            counts["joined"] = counts.get("joined", 0) + 1
            continue
        log = store.log_path(results, sweep, run_id)
        claim = store.claim_path(results, sweep, run_id)
        try:
            with store.open_log(log) as f, claims.Heartbeat(claim):
                f.write(f"=== {name} ({run_id}) on {tasks} nodes from {head}, attempt {attempt} {time.ctime()}\n")
                f.flush()
                code = _run(cmd, env, f, procs)
            try:
                record = finished_record(results, sweep, run_id, code)
                counts[record["status"]] = counts.get(record["status"], 0) + 1
                run_file.unlink(missing_ok=True)
            except scheduler.Preempted:
                counts["preempted"] = counts.get("preempted", 0) + 1
                return counts  # the job is being requeued: no further cell now
            except RuntimeError as e:
                print(f"{name} ({run_id}): {e} (log {log})", flush=True)
                counts["failed"] = counts.get("failed", 0) + 1
        except store.StoreError as e:  # a log that cannot be opened (a planted symlink): the other nodes time out
            print(f"{name} ({run_id}): {e}", flush=True)
            counts["failed"] = counts.get("failed", 0) + 1
        finally:
            claims.release(claim, owner)
    return counts


def _run(cmd: list[str], env: dict, log, procs: list | None) -> int:
    proc = subprocess.Popen(cmd, preexec_fn=ignore_scheduler_signals, env=env, stdout=log or None,
                            stderr=subprocess.STDOUT if log else None)
    if procs is not None:
        procs.append(proc)
    return proc.wait()


def _claim_and_announce(run_file: Path, results: Path, sweep: str, run_id: str, run_dict: dict, name: str,
                        attempt: str, retry_failed: bool) -> dict | None:
    """Task 0: claim the cell and announce it to the other tasks; None (announced as skipped) when it is done,
    unreadable or claimed by another live process."""
    owner = claims.new_owner(f"slurm {attempt}")
    reason = None
    try:
        if not cell_todo(results, sweep, run_id, retry_failed):
            reason = "already final"
        elif not claims.try_claim(store.claim_path(results, sweep, run_id), owner):
            reason = "claimed by another live process"
    except store.StoreError as e:
        reason = str(e)
    body = {"attempt": attempt, "skip": reason} if reason else {"attempt": attempt, "run": run_dict, "name": name,
                                                                "owner": owner}
    store.atomic_write_text(run_file, json.dumps(body))
    if reason:
        print(f"{run_id}: not training ({reason})", flush=True)
    return None if reason else owner


def _announced(run_file: Path, attempt: str, wait_s: float = ANNOUNCE_WAIT_S) -> bool:
    """Another task: wait for task 0's announcement of this attempt; whether to join (False: skipped, or none)."""
    deadline = time.time() + wait_s
    while time.time() < deadline:
        try:
            body = json.loads(run_file.read_text())
        except (OSError, ValueError):
            body = {}
        if body.get("attempt") == attempt:
            return not body.get("skip")
        time.sleep(0.5)
    print(f"{run_file}: no announcement of attempt {attempt} after {wait_s:.0f} s: not joining", file=sys.stderr,
          flush=True)
    return False
