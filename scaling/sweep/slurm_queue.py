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
