"""Claim files: which worker trains which cell, so that any number of launchers share one results directory.

A claim is `<results>/<sweep>/claims/<run_id>.claim`, a small JSON naming its owner (host, pid, token), created
atomically (written to a temporary file, then hard-linked into place: `link` fails if the claim exists, so exactly
one worker wins). The owner touches it every few seconds (heartbeat). A claim is stale when its owner is a dead
process on this host, or when its heartbeat is older than `stale_after` seconds (an owner on another host that
died), or an earlier run of the same requeued Slurm job; a stale claim is taken over under a short steal lock,
so two launchers cannot both take it.
The results directory, not the launcher, holds this state: it survives a killed launcher.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from scaling import scheduler
from scaling.store import sweep_dir

STALE_AFTER_S = 60.0
"""A claim whose heartbeat is older than this is stale (owner presumed dead). Heartbeats come every 5 s."""
HEARTBEAT_S = 5.0


def claims_dir(results_dir: Path, sweep: str) -> Path:
    return sweep_dir(results_dir, sweep) / "claims"


def claim_path(results_dir: Path, sweep: str, run_id: str) -> Path:
    return claims_dir(results_dir, sweep) / f"{run_id}.claim"


def new_owner(worker: str = "") -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex, "worker": worker,
            "claimed": time.time(), "batch_job": scheduler.batch_job_id(), "restart": scheduler.restart_count()}


def read_claim(path: Path) -> tuple[dict, float] | None:
    """(owner, heartbeat age in seconds) of a claim, or None when there is none."""
    try:
        age = time.time() - path.stat().st_mtime
        return json.loads(path.read_text()), age
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, OSError):
        return {}, 0.0  # unreadable: treat as live until its age says otherwise (see is_live)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_live(owner: dict, age: float, stale_after: float = STALE_AFTER_S, job_states: dict | None = None) -> bool:
    """Whether a claim's owner may still be training. An owner in a Slurm job is dead once Slurm says the job
    ended (cancelled, failed, timed out: its processes are being killed), whatever its heartbeat; `job_states`
    are states already queried (else Slurm is asked, bounded)."""
    if age > stale_after:
        return False
    job = scheduler.batch_job_id()
    if job and owner.get("batch_job") == job and owner.get("restart", 0) < scheduler.restart_count():
        return False  # an earlier run of this requeued Slurm job: Slurm ended it before requeueing
    if owner.get("batch_job") and owner["batch_job"] != job:
        from scaling.sweep import slurm_queue

        states = job_states if job_states is not None else slurm_queue.job_states([owner["batch_job"]])
        if states.get(owner["batch_job"]) in slurm_queue.ENDED:
            return False
    if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
        return _pid_alive(owner["pid"])
    return True


def _create(path: Path, owner: dict) -> bool:
    """Create the claim with its content in one step; False if it already exists."""
    tmp = path.with_name(f".{path.name}.{owner['token']}.tmp")
    tmp.write_text(json.dumps(owner))
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def try_claim(path: Path, owner: dict, stale_after: float = STALE_AFTER_S) -> bool:
    """Claim a cell for `owner`: True when this owner now holds it, False when someone live does (only a
    contested claim may ask Slurm about its owner's job)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if _create(path, owner):
        return True
    seen = read_claim(path)
    if seen is None:  # released in between: try once more
        return _create(path, owner)
    if is_live(*seen, stale_after=stale_after):
        return False
    lock = path.with_suffix(".steal")
    lock_owner = {**owner, "token": uuid.uuid4().hex}
    if not _create(lock, lock_owner):
        held = read_claim(lock)
        if held is not None and not is_live(*held, stale_after=stale_after):
            lock.unlink(missing_ok=True)  # a stealer died holding the lock; the next attempt may steal
        return False
    try:
        again = read_claim(path)
        if again is not None and (again[0].get("token") != seen[0].get("token") or is_live(*again, stale_after)):
            return False  # someone else took it over (or it came back to life) meanwhile
        path.unlink(missing_ok=True)
        return _create(path, owner)
    finally:
        lock.unlink(missing_ok=True)


def release(path: Path, owner: dict) -> None:
    """Remove the claim if `owner` still holds it."""
    seen = read_claim(path)
    if seen is not None and seen[0].get("token") == owner["token"]:
        path.unlink(missing_ok=True)


class Heartbeat:
    """Touch a claim every HEARTBEAT_S seconds from a background thread while a cell trains."""

    def __init__(self, path: Path, interval: float = HEARTBEAT_S):
        self.path, self.interval = path, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=self.interval + 1)
