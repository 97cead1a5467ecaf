"""What Slurm knows about a sweep's jobs: the submissions index under the results directory, and job states from
`squeue` (live and recently ended jobs) and `sacct` (older ones). Every query is bounded by a timeout; without
Slurm (or when it does not answer) states are unknown and status falls back on records and claims alone.

The index is `<results>/<sweep>/slurm/submissions/<job>.json`: which cells each array task of a submission trains.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

from scaling import store

ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
          "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD", "SPECIAL_EXIT"}
"""Job states in which a job will still train its cells (or is training them)."""
ENDED = {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
         "DEADLINE", "REVOKED"}
"""Job states after which a job's processes are gone or being killed (their claims are dead, whatever their
heartbeat). A requeued job leaves these for PENDING again."""
QUERY_TIMEOUT_S = 15.0


def record_submission(results_dir: Path, sweep: str, job_id: str, tasks: dict[str, list[str]], info: dict) -> Path:
    """Write the index entry of one submission (task id -> run ids), atomically."""
    path = store.slurm_submissions_dir(results_dir, sweep) / f"{job_id}.json"
    store.atomic_write_text(path, json.dumps({"job": job_id, "submitted": time.time(), "tasks": tasks, **info},
                                             indent=1))
    return path


def cell_tasks(results_dir: Path, sweep: str) -> dict[str, str]:
    """run id -> the array task (`JOB_TASK`) of its latest submission."""
    folder = store.slurm_submissions_dir(results_dir, sweep)
    entries = []
    for path in folder.glob("*.json") if folder.is_dir() else []:
        try:
            entries.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue  # an unreadable index entry loses only the job ids shown by status
    out: dict[str, str] = {}
    for entry in sorted(entries, key=lambda e: e.get("submitted", 0)):
        for task, run_ids in entry.get("tasks", {}).items():
            for rid in run_ids:
                out[rid] = task
    return out


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
    if not job_ids or not available():
        return {}
    wanted = sorted(set(job_ids))
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
