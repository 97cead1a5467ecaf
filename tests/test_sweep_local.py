"""The local launcher on a real tiny sweep (subprocesses, as a user runs it): resume after SIGKILL, two launchers
at once, failures reported and retried. State lives in the results directory only."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scaling import store
from scaling.sweep.plan import compose_sweep, plan_sweep
from tests.inprocess import scaling

TINY = str(Path(__file__).parent / "sweeps" / "tiny.yaml")
pytestmark = pytest.mark.slow


def sweep_cmd(results, *extra):
    """The sweep command line (`[3:]` of it: the arguments of `scaling`, for tests/inprocess.py)."""
    return [sys.executable, "-m", "scaling.cli", "sweep", TINY, "--results-dir", str(results), "--no-probe",
            "--no-progress", *extra]


def records(results) -> dict:
    return {p.stem: json.loads(p.read_text()) for p in (Path(results) / "tiny" / "runs").glob("*.json")}


def headers(results, run_id) -> int:
    """How many times a worker started this cell (one header line per start in the cell's log)."""
    log = Path(results) / "tiny" / "logs" / f"{run_id}.log"
    return log.read_text().count("=== ") if log.exists() else 0


def tiny_ids():
    return [c.run_id for c in plan_sweep(compose_sweep(TINY)).cells]


def test_sweep_runs_every_cell_once_and_a_rerun_skips_them(tmp_path):
    out = subprocess.run(sweep_cmd(tmp_path, "--workers", "2"), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    recs = records(tmp_path)
    assert sorted(recs) == sorted(tiny_ids()) and len(recs) == 6
    assert all(r["status"] == "completed" and r["provenance"]["attempts"] == 1 for r in recs.values())
    assert (tmp_path / "tiny" / "plan.json").exists()
    log = (tmp_path / "tiny" / "logs" / f"{tiny_ids()[0]}.log").read_text()  # the training, as `tail -f` shows it
    assert log.count("\nstep ") >= 2 and "tok/s" in log and "--- completed: val loss" in log
    assert "✓" in out.stdout and tiny_ids()[0] in out.stdout  # the final status table is a result: stdout
    finished = [line for line in out.stderr.splitlines() if " val loss " in line and "finished" in line]
    assert len(finished) == 6 and finished[-1].split("tiny: ")[1].startswith("6/6 finished")  # a log to follow
    again = scaling(*sweep_cmd(tmp_path)[3:])
    assert again.returncode == 0 and "already done" in again.stderr
    assert records(tmp_path) == recs  # untouched


@pytest.mark.lifecycle
def test_sigkill_of_the_launcher_then_rerun_completes_without_retraining(tmp_path):
    proc = subprocess.Popen(sweep_cmd(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = tmp_path / "tiny" / "runs"
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once two cells are done and a third is under way
        done = [r for r in records(tmp_path).values() if r["status"] == "completed"] if runs.exists() else []
        if len(done) >= 2 and any(r["status"] == "running" for r in records(tmp_path).values()):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)  # the workers die with their launcher (PR_SET_PDEATHSIG)
    before = records(tmp_path)
    completed_before = {k: v for k, v in before.items() if v["status"] == "completed"}
    assert len(completed_before) >= 2 and len(completed_before) < 6
    checkpoints = {p.stem for p in (tmp_path / "tiny" / "checkpoints").glob("*.pt")}

    out = subprocess.run(sweep_cmd(tmp_path), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    after = records(tmp_path)
    assert sorted(after) == sorted(tiny_ids())
    assert all(r["status"] == "completed" for r in after.values())
    for rid, rec in completed_before.items():
        assert after[rid] == rec  # completed before the kill: not trained again, record untouched
        assert headers(tmp_path, rid) == 1
    for rid in checkpoints:  # interrupted with a checkpoint: resumed from it, not restarted
        assert after[rid]["provenance"]["resumed_from_steps"], rid


@pytest.mark.lifecycle
def test_two_launchers_at_once_train_each_cell_exactly_once(tmp_path):
    procs = [subprocess.Popen(sweep_cmd(tmp_path, "--workers", "2"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    recs = records(tmp_path)
    assert len(recs) == 6
    for rid, rec in recs.items():
        assert rec["status"] == "completed"
        assert rec["provenance"]["attempts"] == 1, rid
        assert headers(tmp_path, rid) == 1, rid
    assert not list((tmp_path / "tiny" / "claims").glob("*.claim"))  # every claim released


def test_a_failed_cell_is_reported_the_sweep_goes_on_and_retry_failed_completes_it(tmp_path):
    bad = tiny_ids()[1]
    ckpt = store.checkpoint_path(tmp_path, "tiny", bad)
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"garbage")  # an unreadable checkpoint makes this one cell fail at run time
    out = subprocess.run(sweep_cmd(tmp_path), capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    assert "failed" in out.stderr and bad in out.stderr and f"logs/{bad}.log" in out.stderr
    recs = records(tmp_path)
    assert recs[bad]["status"] == "failed" and "cannot be loaded" in recs[bad]["error"]["reason"]
    assert sum(r["status"] == "completed" for r in recs.values()) == 5  # the others ran

    ckpt.unlink()
    skip = scaling(*sweep_cmd(tmp_path)[3:])  # nothing to train: in this process
    assert skip.returncode == 1 and "1 failed" in skip.stderr  # still failed: not retried unasked
    assert records(tmp_path)[bad]["status"] == "failed"
    retry = subprocess.run(sweep_cmd(tmp_path, "--retry-failed"), capture_output=True, text=True, timeout=300)
    assert retry.returncode == 0, retry.stderr
    final = records(tmp_path)
    assert final[bad]["status"] == "completed" and final[bad]["provenance"]["attempts"] == 2
    assert {k: v for k, v in final.items() if k != bad} == {k: v for k, v in recs.items() if k != bad}


def test_dry_run_with_an_impossible_cell_names_it_and_launches_nothing(tmp_path):
    out = scaling(*sweep_cmd(tmp_path, "budgets=[1e3,2e9]", "--dry-run")[3:])
    assert out.returncode == 2
    assert "impossible cell" in out.stderr and "C1e3-lr1e-3" in out.stderr and "raise budget_flops" in out.stderr
    assert not (tmp_path / "tiny").exists()


def test_dry_run_prints_the_plan_with_an_estimate(tmp_path):
    out = scaling("sweep", TINY, "--results-dir", tmp_path, "--dry-run", "--wide")  # with the throughput probe
    assert out.returncode == 0, out.stderr
    for rid in tiny_ids():
        assert rid in out.stdout  # the plan is the dry run's result: stdout (ids with --wide)
    assert "estimated" in out.stdout and "total" in out.stdout
    assert not (tmp_path / "tiny").exists()


def test_corrupt_records_are_named_left_alone_and_the_sweep_goes_on(tmp_path):
    """Binary garbage and an unknown status in two cells' records: the sweep names both files, trains the other
    four, never trains over the two (an unknown status used to be retrained and overwritten), and `status` and
    `runs` name them and carry on."""
    ids = tiny_ids()
    garbage, unknown = store.record_path(tmp_path, "tiny", ids[0]), store.record_path(tmp_path, "tiny", ids[3])
    garbage.parent.mkdir(parents=True)
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n\xff\x00")
    unknown.write_text(json.dumps({"schema": 1, "id": ids[3], "sweep": "tiny", "status": "exploded", "config": {},
                                   "derived": {}, "results": {}, "provenance": {}}))
    before = {p: p.read_bytes() for p in (garbage, unknown)}
    out = subprocess.run(sweep_cmd(tmp_path), capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr and str(garbage) in out.stderr and str(unknown) in out.stderr
    assert "unreadable records" in out.stderr
    good = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "tiny" / "runs").glob("*.json")
            if p not in before}
    assert len(good) == 4 and all(r["status"] == "completed" for r in good.values())
    assert {p: p.read_bytes() for p in before} == before
    status = scaling("status", "tiny", "--results-dir", tmp_path)
    assert status.returncode == 0 and "corrupt 2" in status.stdout and "Traceback" not in status.stderr
    runs = scaling("runs", "tiny", "--format", "csv", "--results-dir", tmp_path)
    assert runs.returncode == 0 and len(runs.stdout.strip().splitlines()) == 5
    assert runs.stderr.count("skipped:") == 2


@pytest.mark.lifecycle
def test_sigterm_to_the_launcher_saves_checkpoints_and_a_rerun_resumes(tmp_path):
    """SIGTERM (a cluster's or a user's `kill`) used to act like SIGKILL: workers died without a checkpoint."""
    cmd = sweep_cmd(tmp_path, "budgets=[3e10]", "lr.values=[3e-3]")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    (rid,) = [c.run_id for c in plan_sweep(compose_sweep(TINY, ["budgets=[3e10]", "lr.values=[3e-3]"])).cells]
    log = tmp_path / "tiny" / "logs" / f"{rid}.log"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and "\nstep " in log.read_text()):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "SIGTERM" in err and "checkpoint" in err
    record = store.read_record(store.record_path(tmp_path, "tiny", rid))
    assert record["status"] == "failed" and record["error"]["kind"] == "interrupted", record["error"]
    stopped_at = record["results"]["steps_done"]
    assert 0 < stopped_at < record["derived"]["steps"] and store.checkpoint_path(tmp_path, "tiny", rid).exists()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    done = store.read_record(store.record_path(tmp_path, "tiny", rid))
    assert done["status"] == "completed" and done["provenance"]["resumed_from_steps"] == [stopped_at]


@pytest.mark.lifecycle
def test_sigint_to_the_launcher_alone_stops_its_workers_with_checkpoints(tmp_path):
    """Issue 31: SIGINT to the launcher's pid alone (not its process group, as Ctrl-C would) let the workers take
    new cells until they were SIGKILLed, leaving records `running`. Now they checkpoint and stop; no new cell
    starts."""
    cmd = sweep_cmd(tmp_path, "budgets=[3e10]", "lr.values=[3e-3,1e-2]", "--workers", "1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first, second = [c.run_id for c in plan_sweep(compose_sweep(TINY, ["budgets=[3e10]",
                                                                        "lr.values=[3e-3,1e-2]"])).cells]
    logs = tmp_path / "tiny" / "logs"
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.exists() and "\nstep " in p.read_text()
                                             for p in (logs / f"{first}.log", logs / f"{second}.log")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "checkpoint at their next step and stop" in err
    time.sleep(3)  # a worker left running would start the other cell now
    recs = records(tmp_path)
    assert len(recs) == 1, sorted(recs)
    ((rid, rec),) = recs.items()
    assert rec["status"] == "failed" and rec["error"]["kind"] == "interrupted", rec.get("error")
    assert store.checkpoint_path(tmp_path, "tiny", rid).exists()
    assert not (logs / f"{second if rid == first else first}.log").exists()


def test_a_precision_sweep_resumes_like_any_other_and_fits_its_gap(tmp_path):
    """bf16 and emulated fp8 cells of one sweep: a lost record is trained again, the rest left alone, and
    `scaling fit` pairs the two precisions."""
    spec = tmp_path / "tiny_precision.yaml"
    spec.write_text(Path(TINY).read_text() + "seeds: [0, 1]\naxes:\n  train.precision: [bf16, fp8]\n")
    cmd = [*sweep_cmd(tmp_path, "lr.values=[3e-3]", "budgets=[2e9]", "base+=train.diagnostics_every=2")[3:]]
    cmd[1] = str(spec)
    first = scaling(*cmd, "--workers", "2")
    assert first.returncode == 0, first.stderr
    recs = records(tmp_path)
    assert len(recs) == 4 and {r["provenance"]["precision"]["precision"] for r in recs.values()} == {"bf16", "fp8"}
    plan = plan_sweep(compose_sweep(str(spec), ["lr.values=[3e-3]", "budgets=[2e9]",
                                                "base+=train.diagnostics_every=2"]))
    assert {r["name"] for r in recs.values()} == {c.name for c in plan.cells}  # a record has its cell's name
    assert all(r["name"].endswith(("-s0", "-s1")) for r in recs.values())
    lost = next(i for i, r in recs.items() if r["config"]["train"]["precision"] == "fp8")
    (tmp_path / "tiny" / "runs" / f"{lost}.json").unlink()
    again = scaling(*cmd)
    assert again.returncode == 0, again.stderr
    after = records(tmp_path)
    assert after[lost]["status"] == "completed" and after[lost]["results"]["diagnostics"]
    assert {i: r for i, r in after.items() if i != lost} == {i: r for i, r in recs.items() if i != lost}
    fit = scaling("fit", "tiny", "--results-dir", tmp_path, "--json")
    assert fit.returncode == 0, fit.stderr
    (row,) = json.loads(fit.stdout)["precision"]
    assert row["pairs"] == 2 and row["base"] == "bf16" and row["verdict"] in ("no significant gap", "fp8 worse",
                                                                              "fp8 better")
    table = scaling("diagnostics", "tiny", "--cell", "fp8", "--results-dir", tmp_path, "--wide")
    assert table.returncode == 0, table.stderr
    assert table.stdout.count("fp8") >= 4 and "QKV grad underflow" in table.stdout  # 2 runs x 2 layers
    assert "fp8-s0-fp8" not in table.stdout  # the swept parts are named once
    frame = scaling("diagnostics", "tiny", "--format", "csv", "--results-dir", tmp_path)
    lines = frame.stdout.strip().splitlines()
    assert frame.returncode == 0 and lines[0].startswith("run,cell,name,sweep")
    steps = {r["results"]["diagnostics"][-1]["step"] for r in after.values()}
    assert len(lines) - 1 == sum(len(e["gemms"]) for r in after.values() for e in r["results"]["diagnostics"])
    assert steps and scaling("diagnostics", "tiny", "--cell", "nope", "--results-dir", tmp_path).returncode != 0


def test_launch_takes_the_results_folder_from_the_plan_and_refuses_another(tmp_path):
    """The results folder travels once, in the plan: launch(plan) records there; a different folder handed to the
    launcher is refused before anything is written (before issue 26 every cell failed with a ClaimError)."""
    from scaling.config import ConfigError
    from scaling.sweep.local import launch

    plan = plan_sweep(compose_sweep(TINY, ["budgets=[2e9]", "lr.values=[1e-3]", "launcher.workers=1"]),
                      results_dir=str(tmp_path / "a"))
    assert plan.results_dir == tmp_path / "a"
    with pytest.raises(ConfigError, match="planned to record under .*/a, not .*/b"):
        launch(plan, tmp_path / "b", show_progress=False)
    assert not (tmp_path / "b").exists()
    counts = launch(plan, show_progress=False)
    assert counts["completed"] == 1 and records(tmp_path / "a")[plan.cells[0].run_id]["status"] == "completed"


@pytest.mark.distributed
def test_cells_of_different_sizes_run_locally_in_groups_of_one_device_count(tmp_path):
    """launcher.max_gpus_per_run=4 here: the 4-expert cell on one process, then the 128-expert one on four
    (torchrun, FSDP), which the memory plan gave it (tests/test_sweep_slurm.py's _mixed_sizes)."""
    out = subprocess.run(sweep_cmd(tmp_path, "budgets=[4e9]", "lr.values=[3e-3]", "+axes={model.n_experts: [4, 128]}",
                                   "launcher.device=cpu", "launcher.gpu_memory_gb=0.0122",
                                   "launcher.max_gpus_per_run=4"), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "1 of 2 cells to run (0 done; these on 1 device(s) each)" in out.stderr
    assert "1 of 2 cells to run (0 done; these on 4 device(s) each)" in out.stderr
    got = {r["config"]["model"]["n_experts"]: (r["status"], r["provenance"]["processes"])
           for r in records(tmp_path).values()}
    assert got == {4: ("completed", 1), 128: ("completed", 4)}
