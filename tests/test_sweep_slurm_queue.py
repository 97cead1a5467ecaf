"""Job states from squeue/sacct and what `scaling status` makes of them, against stand-in Slurm commands (no
cluster needed): queued, cancelled, forgotten by squeue but known to sacct, and a hung squeue that times out."""

import json
import os
import stat

import pytest

from scaling import claims, scheduler, store
from scaling.sweep import slurm_queue
from scaling.sweep.status import cell_states


def fake_command(folder, name, script):
    path = folder / name
    path.write_text("#!/bin/bash\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def sweep_with_three_cells(results):
    plan = {"cells": [{"id": rid, "name": f"cell-{rid}", "steps": 10} for rid in ("a", "b", "c")]}
    path = store.sweep_dir(results, "s") / "plan.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(plan))
    slurm_queue.record_submission(results, "s", "7", {"7_0": ["a"], "7_1": ["b"], "7_2": ["c"]}, {})


def test_states_come_from_squeue_then_sacct(tmp_path, fake_slurm):
    fake_command(fake_slurm, "squeue", 'echo "7_0|PENDING"; echo "7_1|CANCELLED"\n')
    fake_command(fake_slurm, "sacct", 'echo "JobID|State"; echo "7_2|TIMEOUT"\n')
    assert scheduler.job_states(["7_0", "7_1", "7_2", "8_0"]) == {"7_0": "PENDING", "7_1": "CANCELLED",
                                                                   "7_2": "TIMEOUT"}
    sweep_with_three_cells(tmp_path)
    states = {c["id"]: c for c in cell_states(tmp_path, "s")}
    assert states["a"]["state"] == "queued" and "7_0 PENDING" in states["a"]["detail"]
    assert states["b"]["state"] == "failed" and "Slurm job 7_1 CANCELLED" in states["b"]["detail"]
    assert states["c"]["state"] == "failed" and "TIMEOUT" in states["c"]["detail"]


def test_a_claim_whose_job_was_cancelled_is_dead_whatever_its_heartbeat(tmp_path, fake_slurm):
    fake_command(fake_slurm, "squeue", 'echo "7_0|CANCELLED"\n')
    owner = {**claims.new_owner("cpu0"), "batch_job": "7_0", "host": "elsewhere"}
    assert not claims.is_live(owner, age=1.0)
    assert claims.is_live({**owner, "batch_job": None}, age=1.0)  # no job: the heartbeat decides
    path = store.claim_path(tmp_path, "s", "a")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(owner))
    assert claims.try_claim(path, claims.new_owner("cpu1"))  # taken over at once, not after 60 s


def test_a_hung_squeue_is_bounded_and_status_falls_back_on_the_records(tmp_path, fake_slurm, monkeypatch):
    fake_command(fake_slurm, "squeue", "sleep 30\n")
    monkeypatch.setattr(scheduler, "QUERY_TIMEOUT_S", 0.5)
    sweep_with_three_cells(tmp_path)
    assert {c["state"] for c in cell_states(tmp_path, "s")} == {"pending"}


def test_without_slurm_there_are_no_states(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert scheduler.job_states(["7_0"]) == {}


def test_a_hand_edited_claim_with_a_numeric_batch_job_does_not_crash_status(tmp_path, fake_slurm):
    """Issue 31: a claim whose batch_job was a number ended `scaling status` in an AttributeError (j.split); such
    an id (or text) is not asked about, and the claim goes by its heartbeat like any other host's."""
    fake_command(fake_slurm, "squeue", 'echo "7_0|RUNNING"\n')
    sweep_with_three_cells(tmp_path)
    for bad in (12345, "7; rm -rf /", ["7"]):
        path = store.claim_path(tmp_path, "s", "a")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**claims.new_owner("w0"), "host": "elsewhere", "batch_job": bad}))
        assert scheduler.job_states([bad]) == {}
        states = {s["id"]: s for s in cell_states(tmp_path, "s")}
        assert states["a"]["state"] in ("running", "queued")
