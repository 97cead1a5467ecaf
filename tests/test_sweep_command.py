"""launcher=command: a team's own trainer (tests/external_trainer/train.py, its own argument parser, no scaling
import) trains a sweep's cells under our claims, logs and records; its results fit like native runs; a SIGKILL of
the launcher resumes; templates and results that break the contract are refused with the fix."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scaling.config import ConfigError
from scaling.sweep.command import CommandError, read_result, render
from scaling.sweep.plan import compose_sweep, plan_sweep
from tests.inprocess import scaling

TRAINER = Path(__file__).parent / "external_trainer" / "train.py"
TEMPLATE = (f"{sys.executable} {TRAINER} --lr {{train.lr}} --budget {{budget_flops}} --steps {{derived.steps}} "
            f"--seed {{seed}} --ckpt {{checkpoint_dir}} --out {{result_path}}")
SWEEP = """name: external
description: a team's trainer through launcher=command
base: [model.d_model=32, model.n_heads=2, model.d_expert=32, model.seq_len=64, train.batch_size=4]
budgets: [1e11, 3e11, 1e12]
lr: {values: [2.5e-3, 5e-3, 1e-2]}
"""


def _sweep(tmp_path, step_seconds: float = 0.0) -> list[str]:
    path = tmp_path / "external.yaml"
    path.write_text(SWEEP)
    command = TEMPLATE + (f" --step-seconds {step_seconds}" if step_seconds else "")
    return ["sweep", str(path), "--results-dir", str(tmp_path / "results"), "--no-progress", "launcher=command",
            f"launcher.command={json.dumps(command)}"]


def _records(tmp_path) -> dict:
    return {p.stem: json.loads(p.read_text()) for p in (tmp_path / "results" / "external" / "runs").glob("*.json")}


def test_an_external_trainer_trains_a_sweep_that_fits_like_native_runs(tmp_path):
    out = scaling(*_sweep(tmp_path), "--workers", "2")
    assert out.returncode == 0, out.stderr
    recs = _records(tmp_path)
    assert len(recs) == 9 and all(r["status"] == "completed" for r in recs.values())
    one = next(iter(recs.values()))
    assert one["provenance"]["command"][1] == str(TRAINER) and one["results"]["evals"][0]["step"] == 5
    log = (tmp_path / "results" / "external" / "logs" / f"{one['id']}.log").read_text()
    assert f"$ {sys.executable} {TRAINER} --lr " in log and "--- completed" in log
    fit = scaling("fit", "external", "--results-dir", tmp_path / "results", "--no-plots", "--json")
    assert fit.returncode == 0, fit.stderr
    laws = json.loads(fit.stdout)["laws"]
    lo, hi = laws["lr_opt"]["interval"]["b"]
    assert lo <= -0.26 <= hi, (lo, hi)  # the trainer's own lr law, lr* = 5.07 C^-0.26
    assert laws["lr_opt"]["params"]["b"] == pytest.approx(-0.26, abs=0.06)
    again = scaling(*_sweep(tmp_path))
    assert again.returncode == 0 and "already done" in again.stderr and _records(tmp_path) == recs


def test_a_gpu_presets_dry_run_export_round_trips_into_the_command_launcher(tmp_path):
    """Every key a dry run exports is a placeholder the command launcher fills: the export is the contract."""
    out = scaling("sweep", "lr_batch", "--dry-run", "--no-probe", "--format", "jsonl", "data.train_tokens=1e11",
                  "budgets=[1e18]", env={"SCALING_DATA": "/data/tokens"})
    assert out.returncode == 0, out.stderr
    cell = json.loads(out.stdout.splitlines()[0])
    from scaling.sweep.command import cell_values
    from scaling.sweep.export import cell_row

    values = cell_values(cell["id"], cell["name"], cell["sweep"], cell["config"], cell["derived"], tmp_path)
    result = tmp_path / cell["sweep"] / "external" / cell["id"] / "result.json"
    row = cell_row(cell)
    assert all(k in values for k in row if k not in ("index",))
    argv = render("train --lr {train.lr} --batch {derived.batch_size} --d {model.d_model} --out {result_path}",
                  values)
    assert argv == ["train", "--lr", str(cell["config"]["train"]["lr"]), "--batch",
                    str(cell["derived"]["batch_size"]), "--d", str(cell["config"]["model"]["d_model"]), "--out",
                    str(result)]


def test_templates_and_results_that_break_the_contract_are_refused(tmp_path):
    with pytest.raises(CommandError, match=r"unknown placeholder \{train.lrr\} \(did you mean \{train.lr\}\?\)"):
        render("t --lr {train.lrr}", {"train.lr": "1"})
    assert render("t --name {name}", {"name": "a b; rm -rf ~"}) == ["t", "--name", "a b; rm -rf ~"]  # one word
    with pytest.raises(ConfigError, match="unknown placeholder"):
        plan_sweep(compose_sweep("demo", ["launcher=command", "launcher.command='t {derived.stepz}'"]))
    with pytest.raises(ConfigError, match="launcher=command needs launcher.command"):
        plan_sweep(compose_sweep("demo", ["launcher=command"]))
    for text, why in (("", "not JSON"), ("[1]", "not a JSON object"), ('{"val_loss": -1}', "no usable val_loss"),
                      ('{"val_loss": 2, "curve": [{"step": 1}]}', "curve must be")):
        (tmp_path / "r.json").write_text(text)
        with pytest.raises(CommandError, match=why):
            read_result(tmp_path / "r.json")
    with pytest.raises(CommandError, match="wrote no result"):
        read_result(tmp_path / "none.json")


def test_a_failing_trainer_is_recorded_as_failed_with_its_log(tmp_path):
    path = tmp_path / "external.yaml"
    path.write_text(SWEEP.replace("budgets: [1e11, 3e11, 1e12]", "budgets: [1e11]"))
    out = scaling("sweep", path, "--results-dir", tmp_path / "results", "--no-progress", "launcher=command",
                  f"launcher.command={json.dumps(f'{sys.executable} -c exit(3)')}")
    recs = _records(tmp_path)
    assert out.returncode != 0 and len(recs) == 3 and all(r["status"] == "failed" for r in recs.values())
    assert all("exited with code 3" in r["error"]["reason"] for r in recs.values())


@pytest.mark.lifecycle
def test_a_sigkill_of_the_launcher_resumes_the_external_trainer_from_its_checkpoint(tmp_path):
    cmd = [sys.executable, "-m", "scaling.cli", *_sweep(tmp_path, step_seconds=0.05)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    external = tmp_path / "results" / "external" / "external"
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once a cell is done and another is part way through its steps
        recs = _records(tmp_path) if (tmp_path / "results" / "external" / "runs").exists() else {}
        running = [r for r in recs.values() if r["status"] == "running"]
        if any(r["status"] == "completed" for r in recs.values()) and running and \
                (external / running[0]["id"] / "checkpoints" / "state.json").exists():
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)  # the worker dies with its launcher, the trainer with its worker (PR_SET_PDEATHSIG)
    before = _records(tmp_path)
    assert any(r["status"] == "running" for r in before.values())
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    after = _records(tmp_path)
    assert len(after) == 9 and all(r["status"] == "completed" for r in after.values())
    for rid, rec in before.items():
        if rec["status"] == "completed":
            assert after[rid] == rec  # not run again
    assert any((external / rid / "checkpoints" / "resumed").exists() for rid, r in before.items()
               if r["status"] == "running")  # the interrupted cell resumed from its own checkpoint
