"""Per-cell state from the results directory, and the `status` / `runs` commands."""

import json

import pandas as pd
import pytest

from scaling import claims, store
from scaling.config import to_dict
from scaling.sweep.plan import GridAxis, SweepConfig, plan_sweep
from scaling.sweep.status import cell_states, counts
from tests.inprocess import scaling

BASE = ["model.d_model=32", "model.n_heads=2", "model.d_expert=32", "model.seq_len=64", "train.batch_size=4",
        "data.val_tokens=2048"]


@pytest.fixture
def planned(tmp_path):
    plan = plan_sweep(SweepConfig(name="st", base=BASE, budgets=[2e9], lr=GridAxis(values=[1e-3, 2e-3, 3e-3, 4e-3,
                                                                                              5e-3])),
                      results_dir=str(tmp_path))
    store.write_plan(tmp_path, plan.name, plan.to_json())
    return plan


def put(tmp_path, cell, status, error=None, val=None):
    rec = store.new_record(cell.run_id, "st", cell.name, to_dict(cell.run), cell.plan.derived(), {})
    rec.update(status=status, error=error, results={"val_loss": val, "steps_done": 3})
    store.write_record(store.record_path(tmp_path, "st", cell.run_id), rec)


def test_states_from_records_and_claims(tmp_path, planned):
    c = planned.cells
    put(tmp_path, c[0], "completed", val=2.5)
    put(tmp_path, c[1], "failed", error={"kind": "exception", "reason": "boom"})
    put(tmp_path, c[2], "running")  # its worker died: no live claim
    put(tmp_path, c[3], "running")
    claims.try_claim(store.claim_path(tmp_path, "st", c[3].run_id), claims.new_owner("w0"))
    states = {s["id"]: s for s in cell_states(tmp_path, "st")}
    assert [states[x.run_id]["state"] for x in c] == ["completed", "failed", "interrupted", "running", "pending"]
    assert states[c[1].run_id]["detail"] == "boom"
    assert "w0" in states[c[3].run_id]["detail"]
    assert counts(list(states.values()))["pending"] == 1


def test_status_and_runs_commands(tmp_path, planned):
    put(tmp_path, planned.cells[0], "completed", val=2.5)
    out = scaling("status", "st", "--results-dir", str(tmp_path))
    assert out.returncode == 0 and planned.cells[0].run_id in out.stdout and "pending 4" in out.stdout
    every = scaling("status", "--results-dir", str(tmp_path))
    assert every.returncode == 0 and "st" in every.stdout
    missing = scaling("status", "nope", "--results-dir", str(tmp_path))
    assert missing.returncode == 2 and "no sweep 'nope'" in missing.stderr

    csv = scaling("runs", "st", "--format", "csv", "--results-dir", str(tmp_path))
    assert csv.returncode == 0 and "results.val_loss" in csv.stdout.splitlines()[0]
    js = scaling("runs", "--format", "json", "--results-dir", str(tmp_path))
    assert json.loads(js.stdout)[0]["results.val_loss"] == 2.5
    pq = tmp_path / "runs.parquet"
    out = scaling("runs", "st", "--format", "parquet", "-o", str(pq), "--results-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert pd.read_parquet(pq)["results.val_loss"].tolist() == [2.5]


def test_a_running_cell_shows_the_live_step_of_its_log(tmp_path, planned):
    """The record moves only at checkpoints; status reads the cell's log for where it is now."""
    from scaling import progress

    cell = planned.cells[0]
    put(tmp_path, cell, "running")  # its record says 3 steps done
    claims.try_claim(store.claim_path(tmp_path, "st", cell.run_id), claims.new_owner("w0"))
    log = store.log_path(tmp_path, "st", cell.run_id)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("=== header\n" + progress.line(40, cell.plan.steps, 3.0, 3.1, 1e-3, 40 * 256, 1e4) + "\n")
    state = next(s for s in cell_states(tmp_path, "st") if s["id"] == cell.run_id)
    assert state["state"] == "running" and state["steps_done"] == 40


def test_status_filters_by_state_rolls_up_by_budget_and_watches_until_nothing_moves(tmp_path, planned):
    c = planned.cells
    put(tmp_path, c[0], "completed", val=2.5)
    put(tmp_path, c[1], "failed", error={"kind": "exception", "reason": "boom"})
    failed = scaling("status", "st", "--state", "failed", "--results-dir", str(tmp_path))
    assert failed.returncode == 0 and "1 of 5 cells" in failed.stdout and c[1].run_id in failed.stdout
    assert c[0].run_id not in failed.stdout
    two = scaling("status", "st", "--state", "failed,pending", "--json", "--results-dir", str(tmp_path))
    assert sorted(json.loads(line)["state"] for line in two.stdout.splitlines()) == ["failed", "pending", "pending",
                                                                                     "pending"]
    typo = scaling("status", "st", "--state", "faild", "--results-dir", str(tmp_path))
    assert typo.returncode == 2 and "did you mean 'failed'?" in typo.stderr
    rolled = scaling("status", "st", "--by-budget", "--results-dir", str(tmp_path))
    row = next(line for line in rolled.stdout.splitlines() if "2e+09" in line)
    assert [x.strip() for x in row.split("│")[1:-1]] == ["2e+09", "5", "1", "1", "3"]  # cells, ✓, ✗, pending
    watched = scaling("status", "st", "--watch", "0.01", "--results-dir", str(tmp_path))  # nothing moves: returns
    assert watched.returncode == 0 and watched.stdout.count("sweep st") == 1


def test_a_cell_whose_task_ran_out_of_requeues_says_so(tmp_path, planned, monkeypatch):
    from scaling import scheduler
    from scaling.sweep import slurm_queue

    c = planned.cells
    put(tmp_path, c[0], "running")
    slurm_queue.record_submission(tmp_path, "st", "77", {"77_0": [c[0].run_id], "77_1": [c[1].run_id]}, {})
    monkeypatch.setattr(scheduler, "job_states", lambda ids: {"77_0": "TIMEOUT", "77_1": "CANCELLED"})
    states = {s["id"]: s for s in cell_states(tmp_path, "st")}
    assert states[c[0].run_id]["state"] == "failed" and "launcher.max_requeues" in states[c[0].run_id]["detail"]
    assert "CANCELLED before the cell finished" in states[c[1].run_id]["detail"]
