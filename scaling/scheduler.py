"""The batch scheduler a process runs under (Slurm), read from its environment: recorded as provenance, and used
by claims to tell a requeued job's new run from its old one."""

from __future__ import annotations

import os


def batch_job_id() -> str | None:
    """The Slurm job this process runs in (`ARRAYJOB_TASK` for an array task), else None."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID")


def restart_count() -> int:
    """How many times Slurm has requeued this job (0 on its first run, or outside Slurm)."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0)
