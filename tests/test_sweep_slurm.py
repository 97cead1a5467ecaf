"""The Slurm launcher. Unit tests (dealing cells to tasks, time limits, launcher configs, clear errors) run
anywhere; the integration tests (marked `slurm`) submit real job arrays to the one-node cluster that
`make test-slurm` starts (tests/slurm/slurm_up.sh), and skip cleanly without one. Every wait is bounded."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scaling.sweep import launcher as launcher_mod
from scaling.sweep.launcher import LauncherConfig
from scaling.sweep.plan import compose_sweep, plan_sweep
from scaling.sweep.slurm import deal_cells, lanes_per_task, task_minutes

SWEEPS = Path(__file__).parent / "sweeps"
TINY, LONG = str(SWEEPS / "tiny.yaml"), str(SWEEPS / "long.yaml")
CPU_TASKS = ["launcher=slurm", "launcher.gpus_per_task=0", "launcher.cpus_per_task=1", "launcher.mem_gb=1",
             "launcher.time_per_cell_min=5", "launcher.signal_delay_s=30"]


# ---- units --------------------------------------------------------------------------------------------------
def test_launcher_group_is_composed_from_the_command_line():
    sweep = compose_sweep(TINY, ["launcher=slurm", "launcher.partition=gpu", "launcher.runs_per_gpu=4",
                                 "launcher.setup=[module load cuda]"])
    assert (sweep.launcher.kind, sweep.launcher.partition, sweep.launcher.runs_per_gpu) == ("slurm", "gpu", 4)
    assert sweep.launcher.setup == ["module load cuda"]
    assert compose_sweep(TINY).launcher.kind == "local"


def test_a_clusters_settings_file_next_to_the_sweep_is_a_launcher_option(tmp_path):
    (tmp_path / "launcher").mkdir()
    (tmp_path / "tiny.yaml").write_text(Path(TINY).read_text())
    (tmp_path / "launcher" / "mycluster.yaml").write_text(
        "defaults: [slurm, _self_]\npartition: gpu\nsetup: ['module load cuda/12.4']\nsbatch: {constraint: h100}\n")
    launcher = compose_sweep(str(tmp_path / "tiny.yaml"), ["launcher=mycluster", "launcher.runs_per_gpu=2"]).launcher
    assert (launcher.kind, launcher.partition, launcher.runs_per_gpu) == ("slurm", "gpu", 2)
    assert launcher.setup == ["module load cuda/12.4"] and launcher.sbatch == {"constraint": "h100"}


def test_cells_are_dealt_to_tasks_balancing_their_flops():
    cells = plan_sweep(compose_sweep(TINY)).cells  # 3 cells at 2e9 FLOPs, 3 at 4e9
    tasks = deal_cells(cells, LauncherConfig(kind="slurm", cells_per_lane=2))
    assert sorted(len(t) for t in tasks) == [2, 2, 2]
    loads = [sum(c.run.budget_flops for c in t) for t in tasks]
    assert max(loads) == min(loads) == 6e9  # each task: one 4e9 cell and one 2e9 cell
    assert sorted(c.run_id for t in tasks for c in t) == sorted(c.run_id for c in cells)
    packed = LauncherConfig(kind="slurm", gpus_per_task=2, runs_per_gpu=3)
    assert lanes_per_task(packed) == 6 and len(deal_cells(cells, packed)) == 1
    assert task_minutes(deal_cells(cells, packed), packed) == 60  # six lanes: one cell each
    assert task_minutes(tasks, LauncherConfig(kind="slurm", cells_per_lane=2, time_per_cell_min=30)) == 60


def test_bad_launcher_settings_are_named():
    problems = launcher_mod.check(LauncherConfig(kind="slurm", gpus_per_task=3, gpus_per_run=2, runs_per_gpu=2,
                                                 signal_delay_s=1))
    text = "; ".join(problems)
    assert "gpus_per_task=3 is not a multiple" in text and "runs_per_gpu must be 1" in text
    assert "signal_delay_s=1" in text
    assert launcher_mod.check(LauncherConfig(kind="pbs"))
    text = "; ".join(launcher_mod.check(LauncherConfig(nodes_per_run=2, cells_per_lane=2)))
    assert "needs launcher=slurm" in text and "cells_per_lane and runs_per_gpu must be 1" in text
    text = "; ".join(launcher_mod.check(LauncherConfig(kind="slurm", nodes_per_run=2, gpus_per_task=8,
                                                       gpus_per_run=4, gpu_memory_gb=-1)))
    assert "gpus_per_run (4) must equal gpus_per_task (8)" in text and "gpu_memory_gb=-1 must be" in text
    assert launcher_mod.devices_per_run(LauncherConfig(kind="slurm", nodes_per_run=4, gpus_per_run=8)) == 32


def test_launcher_slurm_without_slurm_fails_before_anything_runs(tmp_path):
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}  # python, but no sbatch/squeue
    out = subprocess.run([sys.executable, "-m", "scaling.cli", "sweep", TINY, "--results-dir", str(tmp_path),
                          "--no-probe", *CPU_TASKS], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 2
    assert "no Slurm (sbatch/squeue not on PATH)" in out.stderr and "drop launcher=slurm" in out.stderr
    assert not (tmp_path / "tiny" / "runs").exists()


# ---- integration, on a real one-node Slurm -------------------------------------------------------------------
def sweep(config, results, *extra, timeout=240):
    cmd = [sys.executable, "-m", "scaling.cli", "sweep", config, "--results-dir", str(results), "--no-probe",
           "--no-progress", *CPU_TASKS, *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def records(results, name) -> dict:
    return {p.stem: json.loads(p.read_text()) for p in (Path(results) / name / "runs").glob("*.json")}


def states(results, name) -> dict:
    out = subprocess.run([sys.executable, "-m", "scaling.cli", "status", name, "--results-dir", str(results),
                          "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return {c["id"]: c for c in map(json.loads, out.stdout.splitlines())}


def wait_for(what, check, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {timeout} s")


def task_of(results, name, run_id) -> str:
    index = Path(results) / name / "slurm" / "submissions"
    entries = sorted((json.loads(p.read_text()) for p in index.glob("*.json")), key=lambda e: e["submitted"])
    return [t for e in entries for t, ids in e["tasks"].items() if run_id in ids][-1]


def checkpointed(results, name, run_id) -> bool:
    rec = records(results, name).get(run_id)
    return bool(rec and rec["status"] == "running" and (rec.get("results") or {}).get("steps_done", 0) >= 100)


@pytest.mark.slurm
def test_slurm_sweep_records_equal_the_local_launchers(tmp_path):
    sweep(TINY, tmp_path / "slurm", "launcher.cells_per_lane=3", "--wait")
    local = subprocess.run([sys.executable, "-m", "scaling.cli", "sweep", TINY, "--results-dir",
                            str(tmp_path / "local"), "--no-probe", "--no-progress", "--workers", "2"],
                           capture_output=True, text=True, timeout=240)
    assert local.returncode == 0, local.stderr
    on_slurm, here = records(tmp_path / "slurm", "tiny"), records(tmp_path / "local", "tiny")
    assert len(on_slurm) == 6 and sorted(on_slurm) == sorted(here)
    for rid, rec in on_slurm.items():
        assert rec["status"] == here[rid]["status"] == "completed"
        for key in ("steps_done", "tokens_done"):
            assert rec["results"][key] == here[rid]["results"][key]
        assert rec["derived"] == here[rid]["derived"]
        assert rec["provenance"]["batch_job"] and here[rid]["provenance"]["batch_job"] is None
    assert len({r["provenance"]["batch_job"] for r in on_slurm.values()}) == 2  # 3 cells per task
    again = sweep(TINY, tmp_path / "slurm")
    assert "nothing to submit" in again.stderr and records(tmp_path / "slurm", "tiny") == on_slurm


@pytest.mark.slurm
def test_cells_packed_in_one_task_all_complete_and_are_recorded_separately(tmp_path):
    sweep(TINY, tmp_path, "name=packed", "launcher.runs_per_gpu=3", "launcher.cells_per_lane=2", "--wait")
    recs = records(tmp_path, "packed")
    assert len(recs) == 6 and all(r["status"] == "completed" for r in recs.values())
    assert len({r["provenance"]["batch_job"] for r in recs.values()}) == 1  # one task
    assert len({r["provenance"]["pid"] for r in recs.values()}) == 3  # three lanes side by side
    assert all((tmp_path / "packed" / "logs" / f"{rid}.log").exists() for rid in recs)


@pytest.mark.slurm
def test_preempted_cell_checkpoints_is_requeued_and_resumes(tmp_path):
    sweep(LONG, tmp_path)
    (run_id,) = [c.run_id for c in plan_sweep(compose_sweep(LONG)).cells]
    wait_for("a first checkpoint", lambda: checkpointed(tmp_path, "long", run_id), 90)
    task = task_of(tmp_path, "long", run_id)
    for sig in ("TERM", "USR2"):  # what submitit's interrupt sends; USR2 alone is the time-limit warning
        subprocess.run(["scancel", f"--signal={sig}", task], check=True, timeout=30)
    wait_for("the requeued task to finish the cell",
             lambda: records(tmp_path, "long")[run_id]["status"] == "completed", 150)
    rec = records(tmp_path, "long")[run_id]
    assert rec["provenance"]["attempts"] == 2 and rec["provenance"]["restart"] == 1
    (resumed,) = rec["provenance"]["resumed_from_steps"]
    assert 100 <= resumed < rec["derived"]["steps"]  # resumed from a checkpoint, not retrained from scratch
    assert rec["results"]["steps_done"] == rec["derived"]["steps"]
    log = (tmp_path / "long" / "logs" / f"{run_id}.log").read_text()
    assert log.count("=== ") == 2 and f"resuming from checkpoint at step {resumed}" in log


@pytest.mark.slurm
def test_cancelled_cell_is_reported_and_retried_without_touching_completed_ones(tmp_path):
    extra = ["budgets=[2e9,1e11]"]
    sweep(LONG, tmp_path, *extra)  # two tasks: the 1e11 cell (long) and the 2e9 cell (short)
    short, long_ = [c.run_id for c in plan_sweep(compose_sweep(LONG, extra)).cells]
    wait_for("the short cell to complete and the long one to checkpoint",
             lambda: checkpointed(tmp_path, "long", long_)
             and records(tmp_path, "long").get(short, {}).get("status") == "completed", 90)
    short_bytes = (tmp_path / "long" / "runs" / f"{short}.json").read_bytes()
    subprocess.run(["scancel", task_of(tmp_path, "long", long_)], check=True, timeout=30)
    t0 = time.time()
    cell = wait_for("status to report the cancelled cell",
                    lambda: (s := states(tmp_path, "long")[long_])["state"] == "failed" and s, 30)
    assert "CANCELLED" in cell["detail"] and time.time() - t0 < 30
    assert states(tmp_path, "long")[short]["state"] == "completed"
    sweep(LONG, tmp_path, *extra, "--retry-failed", "--wait")
    rec = records(tmp_path, "long")[long_]
    assert rec["status"] == "completed" and rec["provenance"]["attempts"] == 2
    assert rec["provenance"]["resumed_from_steps"][0] >= 100
    assert (tmp_path / "long" / "runs" / f"{short}.json").read_bytes() == short_bytes


@pytest.mark.slurm
def test_a_cell_over_two_processes_runs_with_torchrun_inside_its_task(tmp_path):
    sweep(TINY, tmp_path, "name=ddp", "budgets=[2e9]", "lr.values=[3e-3]", "launcher.gpus_per_run=2",
          "launcher.cpus_per_task=2", "--wait")
    ((run_id, rec),) = records(tmp_path, "ddp").items()
    assert rec["status"] == "completed" and rec["provenance"]["processes"] == 2
    assert rec["provenance"]["batch_job"]
    local = subprocess.run([sys.executable, "-m", "scaling.cli", "sweep", TINY, "--results-dir", str(tmp_path / "one"),
                            "--no-probe", "--no-progress", "name=ddp", "budgets=[2e9]", "lr.values=[3e-3]"],
                           capture_output=True, text=True, timeout=240)
    assert local.returncode == 0, local.stderr
    one = records(tmp_path / "one", "ddp")[run_id]  # the same cell on one process
    assert rec["results"]["val_loss"] == pytest.approx(one["results"]["val_loss"], abs=1e-4)


@pytest.mark.slurm
def test_cells_of_different_sizes_run_in_one_job_array_per_gpu_count(tmp_path):
    """launcher.max_gpus_per_run=4: the 4-expert cell trains on one process in one array, the 128-expert cell on
    four (FSDP, torchrun) in another; both complete and the second ends where the same run on one process does."""
    mixed = ["budgets=[4e9]", "lr.values=[3e-3]", "+axes={model.n_experts: [4, 128]}", "launcher.device=cpu",
             "launcher.gpu_memory_gb=0.0122", "launcher.max_gpus_per_run=4", "launcher.cpus_per_task=2"]
    out = sweep(TINY, tmp_path, "name=mixed", *mixed, "--wait", timeout=300)
    import re

    jobs = re.search(r"as 2 Slurm job arrays (\d+), (\d+) ", out.stderr).groups()
    assert " ".join(jobs) in out.stdout.splitlines()  # stdout: the job ids, for scripts
    recs = records(tmp_path, "mixed")
    got = {r["config"]["model"]["n_experts"]: (r["status"], r["provenance"]["processes"],
                                                r["config"]["train"]["parallel"]) for r in recs.values()}
    assert got == {4: ("completed", 1, "auto"), 128: ("completed", 4, "fsdp")}
    assert len({r["provenance"]["batch_job"].split("_")[0] for r in recs.values()}) == 2
    ((big_id, big),) = [(k, r) for k, r in recs.items() if r["config"]["model"]["n_experts"] == 128]
    local = subprocess.run([sys.executable, "-m", "scaling.cli", "sweep", TINY, "--results-dir", str(tmp_path / "one"),
                            "--no-probe", "--no-progress", "name=mixed", *mixed[:3]],
                           capture_output=True, text=True, timeout=240)
    assert local.returncode == 0, local.stderr
    one = records(tmp_path / "one", "mixed")[big_id]  # the same cell on one process
    assert big["results"]["val_loss"] == pytest.approx(one["results"]["val_loss"], abs=1e-3)


@pytest.mark.slurm
def test_a_cell_across_two_nodes_is_preempted_requeued_and_resumes_like_one_process(tmp_path):
    """launcher.nodes_per_run=2 on the one-node cluster: the job's two tasks stand in for two nodes (the sbatch
    options put both on this node), each starts a torchrun agent and they meet in a c10d rendezvous; the ranks
    train one FSDP cell. Pre-empted after a checkpoint, the job is requeued and the cell resumes from its
    sharded checkpoint; it ends where the same run on one process does."""
    two_nodes = ["launcher.nodes_per_run=2", "+launcher.sbatch.nodes=1", "+launcher.sbatch.ntasks_per_node=2",
                 "model.n_experts=1", "model.top_k=1", "train.parallel=fsdp", "budgets=[2e10]"]
    sweep(LONG, tmp_path, *two_nodes)
    (run_id,) = [c.run_id for c in plan_sweep(compose_sweep(LONG, CPU_TASKS + two_nodes)).cells]
    wait_for("a first checkpoint", lambda: checkpointed(tmp_path, "long", run_id), 120)
    task = task_of(tmp_path, "long", run_id)
    for sig in ("TERM", "USR2"):
        subprocess.run(["scancel", f"--signal={sig}", task], check=True, timeout=30)
    wait_for("the requeued job to finish the cell",
             lambda: records(tmp_path, "long")[run_id]["status"] == "completed", 180)
    rec = records(tmp_path, "long")[run_id]
    assert rec["provenance"]["processes"] == 2 and rec["provenance"]["parallel"] == "fsdp"
    assert rec["provenance"]["attempts"] == 2 and rec["provenance"]["restart"] == 1
    (resumed,) = rec["provenance"]["resumed_from_steps"]
    assert 100 <= resumed < rec["derived"]["steps"]
    log = (tmp_path / "long" / "logs" / f"{run_id}.log").read_text()
    assert log.count("=== ") == 2 and "on 2 nodes" in log
    from scaling.config import from_dict
    from scaling.train import train

    one = train(from_dict({**rec["config"], "results_dir": str(tmp_path / "one")}), show_progress=False)
    for a, b in zip(rec["results"]["curve"], one["results"]["curve"], strict=True):
        if a["step"] <= 100:  # to rounding while the sums' order has had few steps to matter (tests/test_distributed)
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    assert rec["results"]["val_loss"] == pytest.approx(one["results"]["val_loss"], rel=0.01)


def test_the_dry_run_shows_the_job_arrays_and_the_cells_their_limits_would_cut_short(monkeypatch):
    """launcher=slurm --dry-run: arrays, tasks, cells per task, the time limits and what they reserve against the
    estimated GPU-hours; each cell's own limit from its estimate by default (x1.5 + 10 min: none is cut short),
    cells of limits more than 2x apart in separate arrays (one limit per array: short cells do not reserve the
    long ones' limit), and the cells longer than a fixed time_per_cell_min x (max_requeues + 1) when one is set."""
    from scaling.sweep.plan import compose_sweep, plan_sweep
    from scaling.sweep.slurm import LENGTH_CLASS_RATIO, array_plan, arrays, cell_minutes
    from scaling.tables import sweep_table

    monkeypatch.setenv("SCALING_DATA", "/data/tokens")
    plan = plan_sweep(compose_sweep("lr_batch", ["launcher=slurm", "data.train_tokens=1e11",
                                                 "launcher.cells_per_lane=2"]), data_required=False)
    a = array_plan(plan)
    assert a["most_cells"] == 2 and a["used_gpu_h"] == pytest.approx(886, rel=0.01)
    hours = {c.run_id: h for c, h in zip(plan.cells, (plan.cell_mfu_flops()[c.run_id] / (989.4e12 * 0.35) / 3600
                                                      for c in plan.cells), strict=True)}
    limits = cell_minutes(plan, plan.cells)
    assert all(limits[r] == pytest.approx(h * 60 * 1.5 + 10, rel=0.01, abs=1) for r, h in hours.items())
    groups = arrays(plan, plan.cells)
    assert len(groups) == len(a["arrays"]) > 1 and sum(len(g) for _, g in groups) == len(plan.cells)
    for (_, cells), x in zip(groups, a["arrays"], strict=True):
        mine = [limits[c.run_id] for c in cells]
        assert max(mine) <= LENGTH_CLASS_RATIO * min(mine) and x["time_min"] >= max(mine)
    one_array = 60 * max(limits.values()) * 2 / 60  # 60 tasks of two longest cells' limits in turn, 1 GPU each
    assert a["reserved_gpu_h"] == pytest.approx(sum(x["tasks"] * x["time_min"] / 60 for x in a["arrays"]))
    assert a["used_gpu_h"] * 1.5 <= a["reserved_gpu_h"] < one_array / 2
    assert a["too_long"] == []
    fixed = plan_sweep(compose_sweep("lr_batch", ["launcher=slurm", "data.train_tokens=1e11",
                                                  "launcher.time_per_cell_min=60"]), data_required=False)
    b = array_plan(fixed)
    longest = max(fixed.cells, key=lambda c: c.plan.tokens * c.plan.counts.M)
    assert len(b["arrays"]) == 1 and b["time_min"] == 60  # one limit for all: one array
    assert longest.name in b["too_long"] and len(b["too_long"]) < len(fixed.cells)
    assert f"slurm: {len(groups)} job arrays, one per GPU count per cell and cell length" in sweep_table(plan,
                                                                                                       {}).caption
    assert "slurm: 120 array task(s) of up to 1 cells" in sweep_table(fixed, {}).caption
    assert "cell(s) need longer than their limit" in sweep_table(fixed, {}).caption


def _mixed_sizes(*extra):
    """Cells of 4 and of 128 experts in 12.5 MiB 'GPUs' (CPU processes here, 90% usable): the 128-expert ones need
    13.2 MiB on one or two, 10.1 MiB each on four (memory.py, FSDP)."""
    return compose_sweep(TINY, ["budgets=[2e10]", "lr.values=[3e-3]", "+axes={model.n_experts: [4, 128]}",
                                "launcher.device=cpu", "launcher.gpu_memory_gb=0.0122", *extra])


def test_a_cell_too_big_for_gpus_per_run_gets_the_fewest_gpus_that_hold_it_up_to_max_gpus_per_run():
    from scaling.sweep.plan import PlanError
    from scaling.sweep.slurm import array_plan, arrays

    plan = plan_sweep(_mixed_sizes("launcher.max_gpus_per_run=4"))
    launcher = plan.config.launcher
    got = {c.run.model.n_experts: (c.devices_per_node(launcher), c.run.train.parallel) for c in plan.cells}
    assert got == {4: (1, "auto"), 128: (4, "fsdp")}
    assert all(c.memory.fits for c in plan.cells)
    with pytest.raises(PlanError, match=r"at least 4 devices, sharded \(launcher.gpus_per_run or max_gpus_per_run"):
        plan_sweep(_mixed_sizes())
    on_slurm = plan_sweep(_mixed_sizes("launcher.max_gpus_per_run=4", *CPU_TASKS))
    groups = arrays(on_slurm, on_slurm.cells)
    assert [(g.gpus_per_run, [c.run.model.n_experts for c in cells]) for g, cells in groups] == [(1, [4]), (4, [128])]
    assert [x["devices"] for x in array_plan(on_slurm)["arrays"]] == [1, 4]
    problems = launcher_mod.check(LauncherConfig(kind="slurm", gpus_per_task=2, max_gpus_per_run=4,
                                                 gpu_memory_gb=80))
    assert problems == ["launcher.max_gpus_per_run=4 exceeds launcher.gpus_per_task=2: a cell's GPUs are one task's "
                        "(more take launcher.nodes_per_run)"]
    assert launcher_mod.check(LauncherConfig(max_gpus_per_run=4)) == [
        "launcher.max_gpus_per_run needs launcher.gpu_memory_gb (a cell gets more GPUs when its memory plan says it "
        "needs them)"]


@pytest.mark.slurm
def test_no_lane_idles_while_cells_remain(tmp_path):
    """A cell 10x longer than three others, two one-lane tasks of two cells each: the deal gives the long cell's
    task a short one too, but the other task, done with its two, takes it while the long cell still trains."""
    config = tmp_path / "uneven.yaml"
    parts = ("parts:\n  - {budgets: [1e11], lr: {values: [3e-3]}}\n"
             "  - {budgets: [1e10], lr: {values: [1e-3, 3e-3, 1e-2]}}\n")
    config.write_text(Path(LONG).read_text().replace("name: long", "name: uneven").replace(
        "budgets: [1e11]\nlr:\n  values: [3e-3]\n", parts))
    sweep(str(config), tmp_path, "launcher.cells_per_lane=2", "--wait", timeout=300)
    recs = records(tmp_path, "uneven")
    assert len(recs) == 4 and all(r["status"] == "completed" for r in recs.values())
    jobs = {r["derived"]["budget_flops"]: set() for r in recs.values()}
    for r in recs.values():
        jobs[r["derived"]["budget_flops"]].add(r["provenance"]["batch_job"])
    assert len(jobs[1e10]) == 1 and jobs[1e10].isdisjoint(jobs[1e11])  # the three short cells: one lane


@pytest.mark.slurm
def test_scaling_cancel_keeps_every_record_and_checkpoint_and_a_rerun_resumes(tmp_path):
    sweep(LONG, tmp_path)
    (run_id,) = [c.run_id for c in plan_sweep(compose_sweep(LONG)).cells]
    wait_for("a first checkpoint", lambda: checkpointed(tmp_path, "long", run_id), 90)
    out = subprocess.run([sys.executable, "-m", "scaling.cli", "cancel", "long", "--results-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "cancelled 1 array task(s)" in out.stdout, out.stderr
    wait_for("status to report the cancelled cell", lambda: states(tmp_path, "long")[run_id]["state"] == "failed", 30)
    failed = subprocess.run([sys.executable, "-m", "scaling.cli", "status", "long", "--state", "failed",
                             "--results-dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert run_id in failed.stdout and "1 cells" in failed.stdout
    assert records(tmp_path, "long")[run_id]["status"] == "running"  # nothing marked lost
    assert (tmp_path / "long" / "checkpoints" / f"{run_id}.pt").exists()
    sweep(LONG, tmp_path, "--wait")
    rec = records(tmp_path, "long")[run_id]
    assert rec["status"] == "completed" and rec["provenance"]["resumed_from_steps"][0] >= 100
