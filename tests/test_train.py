"""One run end to end (tiny models): record, budget accounting, divergence, failure, SIGKILL and resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scaling import store
from scaling.compose import compose
from scaling.run import plan_run
from scaling.train import train
from tests.inprocess import scaling

TINY = ["model.d_model=32", "model.n_heads=2", "model.d_expert=32", "model.seq_len=64", "train.batch_size=4",
        "data.val_tokens=2048", "budget_flops=2e9"]


def test_tiny_run_writes_a_complete_record(tmp_path):
    run = compose(TINY + ["train.log_every=5"])
    plan = plan_run(run)
    record = train(run, show_progress=False)
    path = store.record_path(tmp_path / "results", "single", plan.run_id)
    assert store.read_record(path) == json.loads(path.read_text()) == record
    assert record["status"] == "completed" and record["error"] is None
    d, r = record["derived"], record["results"]
    assert d["tokens"] == (d["steps"] - 1) * d["batch_tokens"] + d["last_batch_size"] * d["seq_len"]
    assert d["tokens"] == r["tokens_done"] and 1 <= d["last_batch_size"] <= d["batch_size"]
    assert d["flops"] == pytest.approx(run.budget_flops, rel=0.01)  # whole steps: within 1% of the budget
    assert set(d["flops_per_token"]) == {"M", "M_with_head", "6N_total", "6N_active", "6N_active_attn"}
    assert 2.0 < r["val_loss"] < 5.6  # learned something, not NaN
    assert r["curve"][0]["step"] == 1 and r["curve"][-1]["step"] == d["steps"]
    assert len(r["expert_load"]) == run.model.n_layers and len(r["expert_load"][0]) == run.model.n_experts
    assert r["expert_load_steps"][1] == d["steps"]
    assert record["provenance"]["data_fingerprint"].startswith("stdlib:")
    assert not store.checkpoint_path(tmp_path / "results", "single", plan.run_id).exists()
    from scaling.device import peak_flops  # MFU as `scaling bench` counts it: with the output head (issue 26)

    peak = peak_flops("cpu", False)
    assert r["mfu"] == pytest.approx(r["tokens_per_s"] * d["flops_per_token"]["M_with_head"] / peak, rel=1e-9)


def test_a_run_records_its_validation_curve_on_the_curve_slice_at_the_shared_steps(tmp_path):
    """The held-out loss at steps 16, 23, 32, ... and inside the WSD decay, on the first curve_val_tokens of the
    held-out set; at the end both that slice and the whole set. The curve falls (it learned) and its steps are
    the ones `curve_steps` names."""
    from scaling.train import curve_steps

    run = compose(TINY + ["train.schedule=wsd", "train.curve_val_tokens=512"])
    record = train(run, show_progress=False)
    steps = record["derived"]["steps"]
    evals = record["results"]["evals"]
    curve = [e for e in evals if e["val_tokens"] == 512]
    assert [e["step"] for e in curve] == sorted(curve_steps(run.train, steps)) + [steps]
    assert evals[-1] == {"step": steps, "val_loss": record["results"]["val_loss"], "val_tokens": 2048}
    assert curve[-1]["val_loss"] < curve[0]["val_loss"] - 0.5
    off = train(compose(TINY + ["train.schedule=wsd", "train.curve_val_tokens=0", "seed=1"]), show_progress=False)
    assert [e["val_tokens"] for e in off["results"]["evals"]] == [2048]


def test_curve_steps_are_shared_by_runs_of_every_length_up_to_the_shorter_ones_decay():
    """x sqrt 2 from step 16 in every run, so a longer run's curve up to a shorter run's decay start (where it
    branches from) is the same steps; the decay points lie strictly after the decay start."""
    from scaling.lr_schedule import stable_end
    from scaling.train import curve_steps

    cfg = compose(["train.schedule=wsd", "train.warmup_steps=20"]).train
    short, long = curve_steps(cfg, 300), curve_steps(cfg, 1200)
    branch = stable_end(cfg, 300)
    assert {s for s in short if s <= branch} == {s for s in long if s <= branch}
    assert sorted(s for s in short if s <= branch)[:4] == [16, 23, 32, 45]
    start = stable_end(cfg, 1200)  # 960: a decay of 240 steps, evaluated at its quarters (and at grid step 1024)
    assert sorted(s for s in long if s > start) == [1020, 1024, 1080, 1140]
    assert curve_steps(compose(["train.curve_val_tokens=0"]).train, 1200) == frozenset()


@pytest.mark.parametrize("experts", [["model.n_experts=1", "model.top_k=1"], []])
def test_micro_batches_accumulate_to_the_whole_batchs_update(tmp_path, experts):
    """5 rows per step in micro-batches of 2, 2 and 1 follow the run that takes all 5 at once (dense to rounding;
    the aux-free MoE too, its bias moved by the step's summed load, over a run short enough that rounding flips
    no top-k choice); the micro-batch is not part of the run's identity."""
    base = TINY + ["train.batch_size=5", "budget_flops=1e9", "train.log_every=1"] + experts
    whole = train(compose(base + [f"results_dir={tmp_path / 'a'}"]), show_progress=False)
    run = compose(base + ["train.micro_batch_size=2", f"results_dir={tmp_path / 'b'}"])
    assert plan_run(run).run_id == whole["id"]
    micro = train(run, show_progress=False)
    assert micro["provenance"]["micro_batch"] == 2 and whole["provenance"]["micro_batch"] is None
    for a, b in zip(micro["results"]["curve"], whole["results"]["curve"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    flat = [[share for layer in r["results"]["expert_load"] for share in layer] for r in (micro, whole)]
    assert flat[0] == pytest.approx(flat[1], abs=1e-6)


def test_a_completed_run_is_not_trained_again(tmp_path):
    run = compose(TINY)
    first = train(run, show_progress=False)
    again = train(run, show_progress=False)
    assert again == first
    assert again["provenance"]["attempts"] == 1


def test_a_rerun_of_a_finished_run_tidies_what_a_kill_after_its_record_left(tmp_path):
    """Issue 31: `scaling train` never removed a finished run's leftover checkpoint and dead claim (only a sweep
    launch did)."""
    import json
    import subprocess
    import sys

    from scaling import claims, store
    from scaling.config import resolve_results_dir

    run = compose(TINY)
    first = train(run, show_progress=False)
    results, rid = resolve_results_dir(run), first["id"]
    ckpt, claim = store.checkpoint_path(results, run.sweep, rid), store.claim_path(results, run.sweep, rid)
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    ckpt.write_bytes(b"left by a kill")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    claim.parent.mkdir(parents=True, exist_ok=True)
    claim.write_text(json.dumps({**claims.new_owner("killed"), "pid": int(dead.stdout)}))
    assert train(run, show_progress=False) == first
    assert not ckpt.exists() and not claim.exists()


def test_absurd_learning_rate_is_recorded_as_diverged(tmp_path):
    run = compose(TINY + ["train.lr=1e3"])
    record = train(run, show_progress=False)
    assert record["status"] == "diverged"
    assert record["error"]["kind"] == "diverged" and record["error"]["step"] >= 0
    assert "step" in record["error"]["reason"]
    path = store.record_path(tmp_path / "results", "single", plan_run(run).run_id)
    assert json.loads(path.read_text())["status"] == "diverged"  # valid JSON, no NaN
    assert train(run, show_progress=False)["provenance"]["attempts"] == 1  # a diverged run is final too


def test_a_failure_is_recorded_and_the_rerun_completes(tmp_path, monkeypatch):
    import scaling.train as train_mod

    run = compose(TINY + ["train.checkpoint_every=2"])

    def broken(*a, **k):
        raise RuntimeError("disk on fire")

    real = train_mod._evaluate
    monkeypatch.setattr(train_mod, "_evaluate", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        train(run, show_progress=False)
    rid = plan_run(run).run_id
    rec = store.read_record(store.record_path(tmp_path / "results", "single", rid))
    assert rec["status"] == "failed" and "disk on fire" in rec["error"]["reason"]
    monkeypatch.setattr(train_mod, "_evaluate", real)
    done = train(run, show_progress=False)
    assert done["status"] == "completed" and done["provenance"]["attempts"] == 2
    assert done["provenance"]["resumed_from_steps"]  # picked up from its checkpoint, not from scratch


def _scaling(*args):
    return [sys.executable, "-m", "scaling.cli", "train", "--no-progress", *args]


@pytest.mark.lifecycle
def test_sigkill_then_rerun_resumes_and_matches_an_uninterrupted_run(tmp_path):
    overrides = TINY + ["budget_flops=6e9", "train.checkpoint_every=5"]
    env = {**os.environ, "SCALING_RESULTS": str(tmp_path / "killed")}
    run = compose(overrides)
    plan = plan_run(run)
    ckpt = store.checkpoint_path(tmp_path / "killed", "single", plan.run_id)
    proc = subprocess.Popen(_scaling(*overrides), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert ckpt.exists(), "no checkpoint was written before the run ended"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rec_path = store.record_path(tmp_path / "killed", "single", plan.run_id)
    assert store.read_record(rec_path)["status"] == "running"  # killed mid-run: not completed

    out = scaling("train", "--no-progress", *overrides, env={"SCALING_RESULTS": str(tmp_path / "killed")})
    assert out.returncode == 0, out.stderr
    assert "resuming from checkpoint" in out.stderr
    resumed = store.read_record(rec_path)

    reference = train(compose(overrides + [f"results_dir={tmp_path / 'clean'}"]), show_progress=False)
    assert resumed["status"] == reference["status"] == "completed"
    assert resumed["provenance"]["resumed_from_steps"] and resumed["provenance"]["resumed_from_steps"][0] >= 5
    for key in ("tokens", "steps", "flops"):
        assert resumed["derived"][key] == reference["derived"][key]
    assert resumed["results"]["steps_done"] == reference["results"]["steps_done"] == plan.steps
    # Batches are a function of (seed, step) and the checkpoint holds the optimizer: the same run.
    assert resumed["results"]["val_loss"] == pytest.approx(reference["results"]["val_loss"], abs=1e-4)
    assert not Path(ckpt).exists()


@pytest.mark.gpu
def test_tiny_run_on_cuda_in_bf16(tmp_path):
    run = compose(TINY + ["train.device=cuda", "budget_flops=2e10"])
    record = train(run, show_progress=False)
    assert record["status"] == "completed"
    assert "cpu" not in record["provenance"]["device"]
    assert record["results"]["val_loss"] < 4.0


@pytest.mark.gpu
def test_tiny_run_on_cuda_in_fp8_uses_real_fp8_gemms_where_the_gpu_has_them(tmp_path):
    import torch

    run = compose(TINY + ["train.device=cuda", "budget_flops=2e10", "train.precision=fp8",
                          "train.diagnostics_every=10"])
    record = train(run, show_progress=False)
    assert record["status"] == "completed" and record["results"]["val_loss"] < 4.0
    fp8_cores = torch.cuda.get_device_capability() >= (8, 9)
    assert record["provenance"]["precision"]["linear"] == ("torchao float8" if fp8_cores else
                                                           "torchao float8 (emulated)")
    assert record["results"]["diagnostics"][-1]["qkv_grad_underflow"][0] is not None


def test_an_unreadable_checkpoint_is_a_clear_error(tmp_path):
    run = compose(TINY)
    ckpt = store.checkpoint_path(tmp_path / "results", "single", plan_run(run).run_id)
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(store.StoreError, match="cannot be loaded.*move it aside"):
        train(run, show_progress=False)
    assert ckpt.read_bytes() == b"not a checkpoint"  # nothing recorded is overwritten


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path):
    """train.compile traces the grouped-matmul experts (a custom op) and trains the same model."""
    eager = train(compose(TINY + ["results_dir=" + str(tmp_path / "eager")]), show_progress=False)
    compiled = train(compose(TINY + ["train.compile=true", "results_dir=" + str(tmp_path / "compiled")]),
                     show_progress=False)
    assert compiled["id"] == eager["id"]  # compiling does not change what is trained
    assert compiled["status"] == "completed"
    assert compiled["results"]["val_loss"] == pytest.approx(eager["results"]["val_loss"], abs=0.02)


def test_compile_cache_lives_under_the_corpus_cache_unless_set(tmp_path, monkeypatch):
    import torch

    from scaling.train import compile_model

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "")  # so that monkeypatch restores the original afterwards
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    compile_model(torch.nn.Linear(2, 2), tmp_path)  # lazy: nothing is compiled until the first call
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "inductor")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/somewhere/else")
    compile_model(torch.nn.Linear(2, 2), tmp_path)
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/somewhere/else"


@pytest.mark.lifecycle
def test_two_trainings_of_one_run_never_overwrite_each_other(tmp_path):
    """Two `scaling train` of the same run at once: the second is refused while the first trains (it used to
    overwrite the record with its own `running`), and a completed record is never replaced."""
    args = [sys.executable, "-m", "scaling.cli", "train", *TINY, "budget_flops=3e10", "--no-progress"]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rec_path = store.record_path(tmp_path / "results", "single", plan_run(compose(TINY + ["budget_flops=3e10"])).run_id)
    deadline = time.time() + 120
    while time.time() < deadline and not rec_path.exists():
        time.sleep(0.05)
    second = scaling(*args[3:])  # (in this process: it is refused at once)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert second.returncode == 2 and "is being trained by scaling train on" in second.stderr, second.stderr
    record = store.read_record(rec_path)
    assert record["status"] == "completed" and record["provenance"]["attempts"] == 1
    again = scaling(*args[3:])
    assert again.returncode == 0 and "already completed" in again.stderr
    assert store.read_record(rec_path) == record


def test_a_short_run_that_blows_up_is_diverged_from_the_first_step(tmp_path):
    """lr = 10 for a few steps: the relative test had no history yet (it waited 10 steps), so this run used to be
    `completed` at a held-out loss of ~1000 nats and entered the fits. The absolute bound catches it."""
    from scaling.train import divergence_bound

    run = compose(TINY + ["train.lr=10", "budget_flops=4e8"])
    assert plan_run(run).steps < 10
    record = train(run, show_progress=False)
    assert record["status"] == "diverged", record["results"]
    assert "ln vocab" in record["error"]["reason"] or "exceeded" in record["error"]["reason"]
    assert divergence_bound(run) == pytest.approx(3 * 5.545, rel=1e-3)


def test_a_full_disk_at_the_end_prints_the_result_it_could_not_record(tmp_path, monkeypatch):
    import io

    from rich.console import Console

    real = store.write_record

    def full_at_the_end(path, record):
        if record["status"] == "completed":
            raise store.StoreError(f"no space left on the device writing {path}: free disk space")
        real(path, record)

    monkeypatch.setattr(store, "write_record", full_at_the_end)
    text = io.StringIO()
    with pytest.raises(store.StoreError, match="no space left"):
        train(compose(TINY), show_progress=False, console=Console(file=text, width=300))
    printed = text.getvalue()
    assert "completed: val loss" in printed and "NOT RECORDED: no space left" in printed


def test_an_fp8_run_stopped_at_a_checkpoint_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    """Emulated FP8 (torchao's Float8Linear layers, quantized expert GEMMs) through a checkpoint and back: the same
    run, its diagnostics kept across the stop; the record says how it trained."""
    from scaling import scheduler

    overrides = TINY + ["budget_flops=4e9", "train.precision=fp8", "train.diagnostics_every=3",
                        "train.checkpoint_every=0"]
    reference = train(compose(overrides + [f"results_dir={tmp_path / 'clean'}"]), show_progress=False)
    calls = {"n": 0}
    real = scheduler.pending_requests

    def stop_at_step_4():
        calls["n"] += 1
        return (False, "a test's stop") if calls["n"] == 4 else real()

    monkeypatch.setattr(scheduler, "pending_requests", stop_at_step_4)
    run = compose(overrides + [f"results_dir={tmp_path / 'stopped'}"])
    with pytest.raises(scheduler.Preempted):
        train(run, show_progress=False)
    monkeypatch.setattr(scheduler, "pending_requests", real)
    resumed = train(run, show_progress=False)
    assert resumed["provenance"]["resumed_from_steps"] == [4]
    precision = resumed["provenance"]["precision"]
    assert precision["precision"] == "fp8" and precision["linear"] == "torchao float8 (emulated)"
    assert precision["linear_layers"] == 4 and "quantize-dequantize" in precision["experts"]
    assert resumed["results"]["val_loss"] == pytest.approx(reference["results"]["val_loss"], abs=1e-6)
    steps = [e["step"] for e in resumed["results"]["diagnostics"]]
    assert steps == [e["step"] for e in reference["results"]["diagnostics"]] and steps[:2] == [3, 6]
    assert resumed["results"]["diagnostics"] == reference["results"]["diagnostics"]
