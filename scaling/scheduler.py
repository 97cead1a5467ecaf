"""The batch scheduler (Slurm), as a training process and a launcher see it:

- the job a process runs under, read from its environment (recorded as provenance, and used by claims to tell a
  requeued job's new run from its old one);
- the states of jobs, from `squeue` (live and recently ended jobs) and `sacct` (older ones). Every query is
  bounded by a timeout; without Slurm (or when it does not answer) states are unknown and callers fall back on
  records and claims alone;
- its signals: a handler asks for a checkpoint (SIGTERM) or a checkpoint and a stop (SIGUSR2), and the training
  loop serves the request at its next step boundary (`pending_requests`, then `checkpoint_served`), raising
  `Preempted` after a stop."""

from __future__ import annotations

import os
import shutil
import subprocess

ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
          "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD", "SPECIAL_EXIT"}
"""Job states in which a job will still train its cells (or is training them)."""
ENDED = {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
         "DEADLINE", "REVOKED"}
"""Job states after which a job's processes are gone or being killed (their claims are dead, whatever their
heartbeat). A requeued job leaves these for PENDING again."""
QUERY_TIMEOUT_S = 15.0


def batch_job_id() -> str | None:
    """The Slurm job this process runs in (`ARRAYJOB_TASK` for an array task), else None."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID")


def restart_count() -> int:
    """How many times Slurm has requeued this job (0 on its first run, or outside Slurm)."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0)


def available() -> bool:
    return shutil.which("squeue") is not None


def _run(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=QUERY_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def job_states(job_ids: list[str]) -> dict[str, str]:
    """State of each job or array task id (e.g. '12_3' -> 'RUNNING'); ids Slurm no longer knows are left out."""
    import re

    wanted = sorted({str(j) for j in job_ids or () if re.fullmatch(r"\d+(_\d+)?", str(j))})  # a hand-edited claim's
    if not wanted or not available():  # batch_job (a number, text) is no id to ask about
        return {}
    arrays = sorted({j.split("_")[0] for j in wanted})
    states: dict[str, str] = {}
    text = _run(["squeue", "-h", "-r", "-t", "all", "-j", ",".join(arrays), "-o", "%i|%T"])
    if text is None:  # one id Slurm has forgotten fails the whole query: ask per job
        text = "".join(_run(["squeue", "-h", "-r", "-t", "all", "-j", a, "-o", "%i|%T"]) or "" for a in arrays)
    for line in text.splitlines():
        jid, _, state = line.strip().partition("|")
        if jid:
            states[jid] = state.split()[0] if state else "UNKNOWN"
    missing = [j for j in wanted if j not in states]
    if missing and shutil.which("sacct"):
        text = _run(["sacct", "-n", "-P", "-X", "-j", ",".join(sorted({j.split("_")[0] for j in missing})),
                     "-o", "JobID,State"]) or ""
        for line in text.splitlines():
            jid, _, state = line.strip().partition("|")
            if jid and jid != "JobID" and jid not in states:
                states[jid] = state.split()[0] if state else "UNKNOWN"  # 'CANCELLED by 0' -> 'CANCELLED'
    return {j: states[j] for j in wanted if j in states}


# ---- signals: asked by handlers, served by the training loop at a step boundary --------------------------------
class Preempted(Exception):
    """Training stopped at a step boundary on a scheduler's request (its warning signal); a checkpoint was saved,
    so the next attempt resumes there."""


_REQUESTS = {"checkpoint": False, "stop": None}


def request_checkpoint() -> None:
    """Save a checkpoint at the next step boundary and go on training."""
    _REQUESTS["checkpoint"] = True


def request_stop(reason: str) -> None:
    """Save a checkpoint at the next step boundary and stop (Preempted); a process that asked takes no new run."""
    _REQUESTS["stop"] = reason


def stop_requested() -> str | None:
    """Why a stop was asked (e.g. 'preempted (SIGUSR2)'), or None."""
    return _REQUESTS["stop"]


def pending_requests() -> tuple[bool, str | None]:
    """(checkpoint asked, stop reason or None) as they stand now; a stop stays asked once asked."""
    return _REQUESTS["checkpoint"], _REQUESTS["stop"]


def checkpoint_served() -> None:
    """The loop saved the checkpoint that was asked for."""
    _REQUESTS["checkpoint"] = False


def handle_signals() -> None:
    """In a batch job's training process: SIGTERM (a cancel or pre-emption is coming) saves a checkpoint at the
    next step and goes on; SIGUSR2 (Slurm's time-limit / pre-emption warning, as submitit asks for it) saves one
    and stops, so the requeued job resumes from it. Call from the main thread."""
    import signal

    signal.signal(signal.SIGTERM, lambda signum, frame: request_checkpoint())
    signal.signal(signal.SIGUSR2, lambda signum, frame: request_stop(f"preempted ({signal.Signals(signum).name})"))
