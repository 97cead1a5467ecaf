"""The command line: help, errors, dry runs and bench in this process (tests/inprocess.py), what an import loads and
the acceptance run in subprocesses, as a user runs them."""

import json
import os
import subprocess
import sys

import pytest

from tests.inprocess import scaling

CLI = [sys.executable, "-m", "scaling.cli"]


def run_cli(*args, env_extra=None, timeout=300):
    """`scaling ARGS` in a fresh process, as a user types it."""
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_cli_import_is_light():
    code = ("import sys, scaling.cli; heavy = [m for m in ('torch', 'wandb', 'matplotlib', 'pandas', 'scipy', "
            "'hydra') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_fit_does_not_import_torch():
    code = ("import sys, scaling.fit.report, scaling.fit.inputs, scaling.fit.leverage; "
            "print([m for m in ('torch', 'wandb', 'hydra') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_help_lists_train():
    out = scaling("--help")
    assert out.returncode == 0 and "train" in out.stdout


def test_impossible_config_is_one_line_and_spends_nothing(tmp_path):
    results = tmp_path / "results"
    out = scaling("train", "model.top_k=9", f"results_dir={results}")
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "model.top_k=9" in lines[0] and "n_experts" in lines[0]
    assert not results.exists()


def test_dry_run_prints_the_plan_and_trains_nothing(tmp_path):
    results = tmp_path / "results"
    out = scaling("train", "--dry-run", "budget_flops=1e12", f"results_dir={results}")
    assert out.returncode == 0, out.stderr
    assert "1,185,792" in out.stdout and "steps" in out.stdout  # M of the default tiny MoE: a result, on stdout
    assert not results.exists()


@pytest.mark.slow
def test_acceptance_default_tiny_moe_at_3e11(tmp_path):
    """`scaling train budget_flops=3e11`: below 3.0 nats/byte (unigram 3.12), balanced experts over the last tenth."""
    results = tmp_path / "results"  # --results-dir, as every command spells it (and beating $SCALING_RESULTS)
    out = run_cli("train", "budget_flops=3e11", "--no-progress", "--results-dir", str(results))
    assert out.returncode == 0, out.stderr
    assert "completed" in out.stdout and "val loss" in out.stdout.lower()  # the result line is a result: stdout
    [path] = list((results / "single" / "runs").glob("*.json"))
    record = json.loads(path.read_text())
    assert record["status"] == "completed"
    assert record["results"]["val_loss"] < 3.0
    shares = record["results"]["expert_load"]
    n_experts = record["config"]["model"]["n_experts"]
    assert max(max(layer) for layer in shares) <= 2.0 / n_experts  # no expert above twice its fair share
    start, end = record["results"]["expert_load_steps"]
    assert end == record["derived"]["steps"] and end - start == round(0.1 * end)


def test_bench_reports_speed_and_mfu():
    out = scaling("bench", "model.d_model=32", "model.n_heads=2", "model.d_expert=32", "model.seq_len=64",
                  "train.batch_size=4", "--rounds", "1")
    assert out.returncode == 0, out.stderr
    assert "tokens/s" in out.stdout and "MFU" in out.stdout and "ms" in out.stdout
    bad = scaling("bench", "model.top_k=99")
    assert bad.returncode == 2 and "model.top_k" in bad.stderr


def test_version_short_help_and_completion():
    from scaling import __version__

    version = scaling("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"scaling {__version__}"
    short = scaling("train", "-h")
    assert short.returncode == 0 and "--results-dir" in short.stdout and "--show-config" in short.stdout
    assert "--install-completion" in scaling("--help").stdout


def test_show_config_prints_the_resolved_run_and_sweep_as_yaml(tmp_path):
    import yaml

    run = scaling("train", "model=tiny_dense", "train.lr=2e-3", "--show-config")
    assert run.returncode == 0, run.stderr
    cfg = yaml.safe_load(run.stdout)
    assert cfg["model"]["n_experts"] == 1 and cfg["train"]["lr"] == 2e-3
    sweep = scaling("sweep", "demo", "model.n_experts=16", "--cfg", "job")
    assert sweep.returncode == 0, sweep.stderr
    cfg = yaml.safe_load(sweep.stdout)
    assert cfg["name"] == "demo" and cfg["base"][-1] == "model.n_experts=16"


def test_a_users_sweep_by_name_from_its_folder(user_sweeps, monkeypatch):
    monkeypatch.chdir(user_sweeps)
    out = scaling("sweep", "mine", "--dry-run", "--no-probe", "--wide")  # shapes with --wide
    assert out.returncode == 0, out.stderr
    assert "sweep mine: 2 cells" in out.stdout and "d32L1" in out.stdout
    assert "base: model=wide" in out.stdout  # the dry run shows the resolved base



def test_python_dash_m_knows_every_command():
    """`python -m scaling.cli data prepare` (before issue 26: "No such command 'data'": app() ran before the data
    commands were registered)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "scaling.cli", "data", "prepare", "--help"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "--train-bpe" in out.stdout, out.stderr


def test_bench_times_every_shape_of_a_sweep_and_keeps_nothing_off_a_gpu(tmp_path):
    out = scaling("bench", "--sweep", "demo", "--rounds", "1")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("[1/2] d64L2 E8k2 x8: ") and "MFU" in lines[0]
    assert lines[-1].startswith("2 shape(s) of demo timed on cpu") and "nothing kept" in lines[-1]
