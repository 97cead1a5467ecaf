"""Per-cell state of a sweep, from the results directory alone: its plan, its records and its claims.

States: `completed`, `diverged`, `failed` (from records), `running` (a live claim), `interrupted` (a record left
`running`, or failed by an interrupt, with no live claim: the next launch resumes it from its checkpoint),
`pending` (no record yet), `corrupt` (a record that cannot be read: named, never trained over). Cells submitted
to Slurm (slurm_queue.py, scheduler.py) add the scheduler's view: `queued` (its job is waiting, or running other
cells first), `running` with the job id, and `failed` when its job ended (cancelled, timed out, node failure)
without finishing it; the next `scaling sweep` picks such cells up again.
Importable for notebooks: `cell_states(results_dir, sweep)` returns one dict per cell.
"""

from __future__ import annotations

from pathlib import Path

from scaling import claims, progress, scheduler, store
from scaling.sweep import slurm_queue

STATES = ("completed", "diverged", "failed", "running", "queued", "interrupted", "pending", "corrupt")
"""Every state a cell can be in (see above); tables.py gives each its mark."""


def scheduler_view(results_dir: Path, sweep: str, run_ids: list[str]) -> tuple[dict, dict, dict]:
    """(run id -> array task of its latest submission, run id -> its claim or None, job or task id -> Slurm
    state) for these cells: one squeue/sacct query covers their tasks and their claims' owners."""
    tasks = slurm_queue.cell_tasks(results_dir, sweep)
    seen = {rid: claims.read_claim(store.claim_path(results_dir, sweep, rid)) for rid in run_ids}
    owners = [s[0]["batch_job"] for s in seen.values() if s and s[0].get("batch_job")]
    states = scheduler.job_states([tasks[rid] for rid in run_ids if rid in tasks] + owners)
    return tasks, seen, states


def cell_states(results_dir: Path, sweep: str) -> list[dict]:
    """One dict per cell of the sweep's last launched plan (plus recorded runs not in it)."""
    results_dir = Path(results_dir)
    planned = (store.read_plan(results_dir, sweep) or {}).get("cells", [])
    cells = {c["id"]: {"id": c["id"], "name": c.get("name"), "steps": c.get("steps"), "in_plan": True,
                       "budget": c.get("budget_flops")}
             for c in planned if isinstance(c, dict) and isinstance(c.get("id"), str)}
    for rec_path in sorted(store.runs_dir(results_dir, sweep).glob("*.json")):
        rid = rec_path.stem
        cells.setdefault(rid, {"id": rid, "name": None, "steps": None, "in_plan": False, "budget": None})
    if not cells:
        raise store.StoreError(f"no sweep {sweep!r} under {results_dir}: launch it with `scaling sweep`, or check "
                               f"the results directory (existing: "
                               f"{', '.join(store.list_sweeps(results_dir)) or 'none'})")
    tasks, seen_claims, jobs = scheduler_view(results_dir, sweep, list(cells))
    out = []
    for rid, cell in cells.items():
        state, detail = "pending", ""
        rec = None
        rec_path = store.record_path(results_dir, sweep, rid)
        if rec_path.exists():
            try:
                rec = store.read_record(rec_path)
            except store.StoreError as e:
                state, detail = "corrupt", str(e)
        if rec is not None:
            cell["name"] = cell["name"] or rec.get("name")
            cell["steps"] = cell["steps"] or rec["derived"].get("steps")
            cell["budget"] = cell["budget"] or rec["derived"].get("budget_flops")
            state = rec["status"]
            err = rec.get("error") or {}
            detail = err.get("reason", "")
            if state == "running" or store.was_interrupted(rec):
                state = "interrupted"
        seen = seen_claims[rid]
        task = tasks.get(rid)
        job_state = jobs.get(task or "")
        if state in (*store.FINAL_STATUSES, "corrupt"):
            pass
        elif seen is not None and claims.is_live(*seen, job_states=jobs):
            state = "running"
            detail = claims.describe(seen[0], store.claim_path(results_dir, sweep, rid))
        elif job_state in scheduler.ACTIVE:
            state, detail = "queued", f"Slurm job {task} {job_state}"
        elif job_state == "TIMEOUT" and state != "failed":
            state = "failed"  # submitit requeues a timed-out task at most launcher.max_requeues times, then lets it end
            detail = (f"Slurm job {task} TIMEOUT after its last requeue (launcher.max_requeues): raise "
                      f"launcher.time_per_cell_min or max_requeues; `scaling sweep` resumes it from its checkpoint")
        elif job_state is not None and state != "failed":
            state = "failed"
            detail = f"Slurm job {task} {job_state} before the cell finished; `scaling sweep` picks it up again"
        res = (rec or {}).get("results") or {}
        log = store.log_path(results_dir, sweep, rid)
        steps_done = res.get("steps_done")
        if state == "running":  # live: the last progress line of its log (the record moves only at checkpoints)
            logged = progress.last_step(log)
            steps_done = max(steps_done or 0, logged or 0) or steps_done
        out.append({**cell, "state": state, "detail": detail, "val_loss": res.get("val_loss"),
                    "steps_done": steps_done, "log": str(log) if log.exists() else None})
    return out


def parse_states(text: str | None) -> set[str] | None:
    """`--state failed,running` as a set of STATES (None: every state); an unknown one is a ValueError naming the
    nearest."""
    import difflib

    if not text:
        return None
    wanted = {s.strip() for s in text.split(",") if s.strip()}
    for s in wanted - set(STATES):
        near = difflib.get_close_matches(s, STATES, n=1)
        raise ValueError(f"--state {s!r} is not a cell state" + (f" (did you mean {near[0]!r}?)" if near else "")
                         + f": one of {', '.join(STATES)}")
    return wanted


def by_budget(states: list[dict]) -> dict[float | None, dict]:
    """Cells per state of each budget (FLOPs; None for cells whose budget is unknown), budgets in order."""
    budgets = sorted({s.get("budget") for s in states}, key=lambda b: (b is None, b or 0))
    return {b: counts([s for s in states if s.get("budget") == b]) for b in budgets}


def moving(states: list[dict]) -> bool:
    """Whether any cell is still being trained or waiting in a queue (what `--watch` waits for)."""
    return any(s["state"] in ("running", "queued") for s in states)


def counts(states: list[dict]) -> dict:
    """Cells per state, every state listed (0 when none)."""
    out = {k: 0 for k in STATES}
    for s in states:
        out[s["state"]] += 1
    return out


def sweep_counts(results_dir: Path) -> dict[str, dict]:
    """Cells per state of every sweep under the results directory."""
    return {sweep: counts(cell_states(results_dir, sweep)) for sweep in store.list_sweeps(results_dir)}
