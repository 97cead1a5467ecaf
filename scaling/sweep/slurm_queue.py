"""Which Slurm jobs train a sweep's cells: the submissions index under the results directory (the jobs' states
come from scheduler.job_states).

The index is `<results>/<sweep>/slurm/submissions/<job>.json`: which cells each array task of a submission trains.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from scaling import store


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


def cancel(results_dir: Path, sweep: str, run_ids: list[str] | None = None) -> list[str]:
    """Cancel the sweep's Slurm array tasks that are still queued or running (those training or dealt `run_ids`,
    when given: the task each was dealt to, and the task whose lane holds its claim), with scancel; returns the
    task ids cancelled. Nothing under the results folder is touched: records, claims and checkpoints stay, the
    training processes checkpoint on scancel's SIGTERM, and the next `scaling sweep` resumes the cells."""
    import subprocess

    from scaling import claims, scheduler

    dealt = cell_tasks(results_dir, sweep)
    wanted = set(dealt) if run_ids is None else set(run_ids)
    unknown = wanted - set(dealt) - {rid for rid in wanted if store.record_path(results_dir, sweep, rid).exists()}
    if unknown:
        raise store.StoreError(f"--cells: no cell {', '.join(sorted(unknown))} in sweep {sweep!r} (run ids, as "
                               f"`scaling status {sweep}` lists them)")
    tasks = {dealt[rid] for rid in wanted if rid in dealt}
    for rid in wanted:  # a lane of another task may have taken the cell (the array is a work queue)
        seen = claims.read_claim(store.claim_path(results_dir, sweep, rid))
        if seen and seen[0].get("batch_job"):
            tasks.add(str(seen[0]["batch_job"]))
    states = scheduler.job_states(sorted(tasks))
    active = sorted(t for t in tasks if states.get(t) in scheduler.ACTIVE)
    if active:
        subprocess.run(["scancel", *active], check=True, timeout=60, capture_output=True)
    return active
