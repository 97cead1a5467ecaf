"""Claim files: which process trains which run, so that any number of launchers, `scaling train` commands and
cluster jobs share one results directory; every writer of a run record holds its claim (train.py takes it).

A claim is `<results>/<sweep>/claims/<run_id>.claim` (store.claim_path), a small JSON naming its owner (host, pid,
token), created atomically (written to a temporary file and fsynced, then hard-linked into place: `link` fails if
the claim exists, so exactly one process wins). The owner touches it every few seconds (heartbeat). A claim is
stale when its owner is a dead process on this host, or when its heartbeat is older than `stale_after` seconds (an
owner on another host that died), or an earlier run of the same requeued Slurm job; a stale claim is taken over
under a short steal lock, so two launchers cannot both take it. A claim that cannot be read (empty or garbage
after a crash) is judged by its file's age alone, like any other.
The results directory, not the launcher, holds this state: it survives a killed launcher.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path

from scaling import scheduler, store

STALE_AFTER_S = 60.0
"""A claim whose heartbeat is older than this is stale (owner presumed dead). Heartbeats come every 5 s."""
HEARTBEAT_S = 5.0


class ClaimError(RuntimeError):
    """A run another live process is training (its claim names it); the message says who and what to do."""


def new_owner(worker: str = "") -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex, "worker": worker,
            "claimed": time.time(), "batch_job": scheduler.batch_job_id(), "restart": scheduler.restart_count()}


def read_claim(path: Path) -> tuple[dict, float] | None:
    """(owner, heartbeat age in seconds) of a claim, or None when there is none. An unreadable claim (empty,
    garbage, a symbolic link, dangling or not, a directory) has owner {} and its own age: it blocks its cell only
    until it is stale, and is then removed (a directory moved aside)."""
    import stat

    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError:
        return {}, math.inf
    age = time.time() - st.st_mtime
    if not stat.S_ISREG(st.st_mode):
        return {}, age
    try:
        owner = json.loads(path.read_bytes().decode())
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError, OSError):
        return {}, age
    return (owner if isinstance(owner, dict) else {}), age


def describe(owner: dict, path: Path) -> str:
    """Who holds a claim, in words."""
    if not owner:
        return f"an unreadable claim {path} (left by a crash; stale after {STALE_AFTER_S:.0f} s without a heartbeat)"
    where = f"{owner.get('worker') or 'a process'} on {owner.get('host', '?')} pid {owner.get('pid', '?')}"
    return where + (f", Slurm job {owner['batch_job']}" if owner.get("batch_job") else "")


def _pid_alive(pid: int, since: float | None = None) -> bool:
    """Whether process `pid` runs on this host: it exists and is not a zombie (killed, not yet reaped), and, when
    `since` is given, it started no later than that time (a dead owner's pid reused by another process does not
    keep its claim alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    except (OverflowError, ValueError):
        return False
    state, started = _process_stat(pid)
    if state == "Z":
        return False
    return since is None or started is None or started <= since + 1.0


def _process_stat(pid: int) -> tuple[str | None, float | None]:
    """(state letter, start time in seconds since the epoch) of a process, from /proc on Linux; Nones elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22, starttime: clock ticks after boot; field 3, fields[0], the state
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return fields[0], boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None, None


def is_live(owner: dict, age: float, stale_after: float = STALE_AFTER_S, job_states: dict | None = None) -> bool:
    """Whether a claim's owner may still be training. An owner in a Slurm job is dead once Slurm says the job
    ended (cancelled, failed, timed out: its processes are being killed), whatever its heartbeat; `job_states`
    are states already queried (else Slurm is asked, bounded). An owner on this host is judged by its process
    (alive, and the same process: started before it claimed), not by its heartbeat: a process stopped (SIGSTOP,
    a debugger) keeps its claim however long it is stopped. Owners elsewhere go by the heartbeat's age."""
    job = scheduler.batch_job_id()
    if job and owner.get("batch_job") == job and owner.get("restart", 0) < scheduler.restart_count():
        return False  # an earlier run of this requeued Slurm job: Slurm ended it before requeueing
    if owner.get("batch_job") and owner["batch_job"] != job:
        states = job_states if job_states is not None else scheduler.job_states([owner["batch_job"]])
        if states.get(str(owner["batch_job"])) in scheduler.ENDED:
            return False
    if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
        claimed = owner.get("claimed")
        return _pid_alive(owner["pid"], claimed if isinstance(claimed, (int, float)) else None)
    return age <= stale_after


def _create(path: Path, owner: dict) -> bool:
    """Create the claim with its content in one step; False if it already exists."""
    tmp = path.with_name(f".{path.name}.{owner['token']}.tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(owner))
        f.flush()
        os.fsync(f.fileno())  # a power cut after the link must not leave an empty claim
    try:
        os.link(tmp, path)
        store.fsync_dir(path.parent)
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
            _remove_stale(lock)  # a stealer died holding the lock; the next attempt may steal
        return False
    try:
        again = read_claim(path)
        if again is not None and (again[0].get("token") != seen[0].get("token") or is_live(*again, stale_after)):
            return False  # someone else took it over (or it came back to life) meanwhile
        _remove_stale(path)
        return _create(path, owner)
    finally:
        lock.unlink(missing_ok=True)


def _remove_stale(path: Path) -> None:
    """Remove a stale claim: a file or a symbolic link goes (never its target); a directory someone left at the
    claim's path is moved aside (`<claim>.<time>.aside`), not deleted."""
    try:
        path.unlink(missing_ok=True)
    except (IsADirectoryError, PermissionError):
        if path.is_dir() and not path.is_symlink():
            path.rename(path.with_name(f"{path.name}.{time.time_ns()}.aside"))
        else:
            raise


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


class held:
    """Hold the claim of one run while it trains (a context manager): take it for a new owner, or check that the
    given `owner` (a sweep worker that claimed the cell) still holds it; heartbeat it; release it at the end.
    Raises ClaimError, before anything is written, when another live process holds it."""

    def __init__(self, results_dir: Path, sweep: str, run_id: str, owner: dict | None = None,
                 worker: str = "scaling train", stale_after: float = STALE_AFTER_S):
        self.path = store.claim_path(results_dir, sweep, run_id)
        self.owner, self.worker, self.stale_after, self.run_id = owner, worker, stale_after, run_id
        self.mine = owner is None  # a claim taken here is released here; a worker's is released by the worker

    def __enter__(self):
        if self.owner is None:
            self.owner = new_owner(self.worker)
            if not try_claim(self.path, self.owner, self.stale_after):
                seen = read_claim(self.path)
                who = describe(seen[0], self.path) if seen else "another process"
                raise ClaimError(f"run {self.run_id} is being trained by {who}: wait for it to finish (`scaling "
                                 f"status`), or stop that process first")
        else:
            seen = read_claim(self.path)
            if seen is None or seen[0].get("token") != self.owner.get("token"):
                who = describe(seen[0], self.path) if seen else "nobody"
                raise ClaimError(f"run {self.run_id}: this process's claim {self.path} is now held by {who}; not "
                                 f"training it twice")
        self._beat = Heartbeat(self.path).__enter__()
        return self

    def __exit__(self, *exc):
        self._beat.__exit__(*exc)
        if self.mine:
            release(self.path, self.owner)


def tidy_run(results_dir: Path, sweep: str, record: dict, keep_checkpoints: bool = False) -> list[Path]:
    """A final run's leftovers (a kill between writing its final record and cleaning up): its dead claim, and its
    checkpoint unless kept (keep_checkpoints, train.keep_checkpoint); nothing while a live claim holds the run.
    Returns what was removed."""
    if record.get("status") not in store.FINAL_STATUSES:
        return []
    removed: list[Path] = []
    rid = record["id"]
    claim = store.claim_path(results_dir, sweep, rid)
    seen = read_claim(claim)
    if seen is not None and is_live(*seen):
        return []
    if seen is not None:
        _remove_stale(claim)
        removed.append(claim)
    keep = keep_checkpoints or ((record.get("config") or {}).get("train") or {}).get("keep_checkpoint")
    if not keep:
        ckpt = store.checkpoint_path(results_dir, sweep, rid)
        shards = store.checkpoint_shards_path(results_dir, sweep, rid)
        if ckpt.exists():
            ckpt.unlink(missing_ok=True)
            removed.append(ckpt)
        if shards.is_dir():
            shutil.rmtree(shards, ignore_errors=True)
            removed.append(shards)
    return removed


def tidy(results_dir: Path, sweep: str, keep_checkpoints: bool = False) -> list[Path]:
    """Remove what killed processes left in a sweep's folder: the checkpoint and the dead claim of a run whose
    record is final (a kill between writing `completed` and cleaning up), and temporary files of killed atomic
    writes (a run's, when no live claim holds the run; others once untouched for store.TMP_STALE_S). Returns what
    was removed. Live claims, records and unfinished runs'
    checkpoints are never touched."""
    root = store.sweep_dir(results_dir, sweep)
    removed: list[Path] = []
    for _, record in store.iter_records(results_dir, sweep, on_error=lambda message: None):
        removed += tidy_run(results_dir, sweep, record, keep_checkpoints)
    now = time.time()
    for tmp in [*root.glob(".*.tmp"), *root.glob("*/.*.tmp")] if root.is_dir() else []:
        # `.RUNID.json.XXXX.tmp` in runs/, `.RUNID.pt.XXXX.tmp` in checkpoints/: only the run's claim holder
        # writes those, so with no live claim they are leftovers now; any other (plan.json's) goes by its age
        rid = tmp.name[1:].split(".")[0] if tmp.parent.name in ("runs", "checkpoints") else None
        try:
            if rid is not None:
                seen = read_claim(store.claim_path(results_dir, sweep, rid))
                leftover = seen is None or not is_live(*seen)
            else:
                leftover = now - tmp.stat().st_mtime > store.TMP_STALE_S
            if leftover:
                tmp.unlink()
                removed.append(tmp)
        except OSError:
            continue
    return removed
