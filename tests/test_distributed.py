"""Training one run over several processes (torchrun, gloo on CPU), data parallel (DDP) and sharded (FSDP): the
same run as one process; every rank stops at the same step when only one of them gets the scheduler's signal; a
sharded run killed mid-way resumes from its sharded checkpoint to the same result. These start real process
groups (10-20 s each on 2 cores): `make test-distributed` runs them, CI runs that after `make test`."""

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
from scaling.config import to_dict
from scaling.run import plan_run
from scaling.train import train

pytestmark = [pytest.mark.slow, pytest.mark.distributed]
TINY = ["model.d_model=32", "model.n_heads=2", "model.d_expert=32", "model.seq_len=64", "train.batch_size=4",
        "data.val_tokens=2048", "train.device=cpu", "train.threads=1", "sweep=ddp"]


def torchrun(run_file: Path, nproc: int = 2, **popen):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "scaling.sweep.run_cell", str(run_file)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def write_run(tmp_path, overrides):
    tmp_path.mkdir(parents=True, exist_ok=True)
    run = compose(overrides + [f"results_dir={tmp_path / 'ddp'}"])
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"run": to_dict(run)}))  # no worker claim: rank 0 takes it
    return run, path


def _ddp_and_single(tmp_path, overrides):
    """The same run trained by torchrun over 2 processes and by one process: (plan, 2-process record, record).
    `train.parallel=fsdp` among the overrides shards it."""
    run, path = write_run(tmp_path, overrides)
    proc = torchrun(path)
    out, _ = proc.communicate(timeout=300)
    plan = plan_run(run)
    rec_path = store.record_path(tmp_path / "ddp", "ddp", plan.run_id)
    assert rec_path.exists(), out
    ddp = store.read_record(rec_path)  # the record is the contract (the launchers read it, not torchrun's code)
    single = train(compose(overrides + [f"results_dir={tmp_path / 'single'}"]), show_progress=False)
    assert ddp["status"] == single["status"] == "completed" and ddp["provenance"]["processes"] == 2
    assert ddp["provenance"]["parallel"] == run.train.parallel.replace("auto", "ddp")  # CPU: memory unknown
    assert ddp["results"]["steps_done"] == single["results"]["steps_done"] == plan.steps
    assert ddp["results"]["tokens_done"] == single["results"]["tokens_done"]
    return plan, ddp, single


@pytest.mark.parametrize("parallel", ["auto", "fsdp"])
def test_two_processes_train_the_same_run_as_one(tmp_path, parallel):
    """A dense model (no routing): the 2-process run (DDP, or FSDP with every tensor split over the ranks, some
    unevenly) follows the 1-process one to rounding over the whole run. 5 rows per batch, so the ranks get 3 and
    2 (unequal shares, weighted by rows)."""
    overrides = TINY + ["budget_flops=6e9", "train.batch_size=5", "model.n_experts=1", "model.top_k=1",
                        f"train.parallel={parallel}"]
    _, ddp, single = _ddp_and_single(tmp_path, overrides)
    assert ddp["results"]["val_loss"] == pytest.approx(single["results"]["val_loss"], abs=1e-4)
    for a, b in zip(ddp["results"]["curve"], single["results"]["curve"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)  # summation order differs


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_train_the_same_moe_run_as_one(tmp_path, parallel):
    """An MoE, with the expert loads summed over ranks for the bias update and the record (under FSDP the stacked
    expert tensors of a layer are split over the ranks and gathered whole for each step). Short: a last-bit
    difference of summation order sometimes flips a top-k choice, and aux-free balancing then moves a bias by a
    whole step, after which the runs only agree statistically (seen after 20 to 90 steps of this model)."""
    overrides = TINY + ["budget_flops=6e8", "train.batch_size=5", f"train.parallel={parallel}"]
    plan, ddp, single = _ddp_and_single(tmp_path, overrides)
    assert 8 <= plan.steps <= 15
    assert ddp["results"]["val_loss"] == pytest.approx(single["results"]["val_loss"], abs=1e-4)
    for a, b in zip(ddp["results"]["curve"], single["results"]["curve"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    flat = [share for layer in ddp["results"]["expert_load"] for share in layer]  # loads summed over ranks
    assert flat == pytest.approx([share for layer in single["results"]["expert_load"] for share in layer], abs=1e-6)


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_fp8_trains_over_two_processes_as_in_one_to_its_scales(tmp_path, parallel):
    """Emulated FP8 over 2 processes: weights are whole when they are quantized (FSDP gathers them first), but each
    rank scales its own activations and gradients (its rows' amax, as torchao does under DDP), so the runs agree to
    FP8's rounding, not to the last bit."""
    overrides = TINY + ["budget_flops=6e8", "train.batch_size=4", f"train.parallel={parallel}", "train.precision=fp8",
                        "train.diagnostics_every=4"]
    _, ddp, single = _ddp_and_single(tmp_path, overrides)
    assert ddp["provenance"]["precision"]["linear"] == "torchao float8 (emulated)"
    assert ddp["results"]["val_loss"] == pytest.approx(single["results"]["val_loss"], rel=0.01)
    assert [e["step"] for e in ddp["results"]["diagnostics"]] == [e["step"] for e in single["results"]["diagnostics"]]


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def stop_one_rank_once_training(proc, rec_path: Path, settle_s: float = 0.5) -> str:
    """Wait until a 2-rank torchrun's run is training (rank 0 has recorded its device), then send SIGUSR2 to one
    rank only and wait for the group to stop; returns its output."""
    deadline = time.time() + 120
    while time.time() < deadline and not (rec_path.exists() and store.read_record(rec_path)["provenance"].get(
            "resumed_from_steps") is not None):
        time.sleep(0.05)
    time.sleep(settle_s)
    ranks = sorted(_children(proc.pid))
    assert len(ranks) == 2, ranks
    os.kill(ranks[-1], signal.SIGUSR2)  # one rank only
    out, _ = proc.communicate(timeout=120)
    return out


@pytest.mark.lifecycle
def test_a_signal_to_one_rank_stops_every_rank_at_the_same_step_and_the_run_resumes(tmp_path):
    """A dense model, so the resumed 2-process run can be held to the 1-process one (as in the test above)."""
    overrides = TINY + ["budget_flops=2e10", "train.checkpoint_every=100000", "model.n_experts=1", "model.top_k=1"]
    run, path = write_run(tmp_path, overrides)
    plan = plan_run(run)
    rec_path = store.record_path(tmp_path / "ddp", "ddp", plan.run_id)
    out = stop_one_rank_once_training(torchrun(path), rec_path)
    rec = store.read_record(rec_path)
    assert rec["status"] == "failed" and rec["error"]["kind"] == "interrupted", (rec["error"], out)
    stopped = rec["error"]["step"]
    assert 0 < stopped < plan.steps and "preempted" in rec["error"]["reason"]
    assert store.checkpoint_path(tmp_path / "ddp", "ddp", plan.run_id).exists()

    again = torchrun(path)
    out, _ = again.communicate(timeout=300)
    rec = store.read_record(rec_path)
    assert rec["status"] == "completed" and rec["provenance"]["resumed_from_steps"] == [stopped], out
    reference = train(compose(overrides + [f"results_dir={tmp_path / 'single'}"]), show_progress=False)
    assert reference["status"] == "completed"  # the same run, uninterrupted, on one process
    assert rec["results"]["val_loss"] == pytest.approx(reference["results"]["val_loss"], abs=1e-4)


@pytest.mark.lifecycle
def test_a_sharded_run_killed_mid_way_resumes_from_its_sharded_checkpoint_to_the_same_result(tmp_path):
    """FSDP over 2 processes, checkpointing every 20 steps; the whole process group is killed (SIGKILL: no
    chance to save) after a checkpoint; the rerun resumes from that step's shards and ends where an uninterrupted
    single process does. Then one process refuses the 2-process shards rather than restarting from step 0."""
    overrides = TINY + ["budget_flops=8e9", "train.checkpoint_every=20", "train.keep_checkpoint=true",
                        "model.n_experts=1", "model.top_k=1", "train.parallel=fsdp"]
    run, path = write_run(tmp_path, overrides)
    plan = plan_run(run)
    shards = store.checkpoint_shards_path(tmp_path / "ddp", "ddp", plan.run_id)
    proc = torchrun(path)
    deadline = time.time() + 120
    while time.time() < deadline and not (shards / "latest").exists():
        time.sleep(0.05)
    for pid in [*_children(proc.pid), proc.pid]:  # the ranks (torchrun starts them in their own sessions), then it
        os.kill(pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    saved = int((shards / "latest").read_text().split("-")[1])
    assert 0 < saved < plan.steps and sorted(p.name for p in (shards / f"step-{saved}").iterdir()) == \
        ["rank-0-of-2.pt", "rank-1-of-2.pt"]

    again = torchrun(path)
    out, _ = again.communicate(timeout=300)
    rec = store.read_record(store.record_path(tmp_path / "ddp", "ddp", plan.run_id))
    assert rec["status"] == "completed" and rec["provenance"]["resumed_from_steps"] == [saved], (out, rec["provenance"])
    assert rec["provenance"]["parallel"] == "fsdp"
    reference = train(compose(TINY + ["budget_flops=8e9", "model.n_experts=1", "model.top_k=1",
                                      f"results_dir={tmp_path / 'single'}"]), show_progress=False)
    assert rec["results"]["val_loss"] == pytest.approx(reference["results"]["val_loss"], abs=1e-4)
    for a, b in zip(rec["results"]["curve"], reference["results"]["curve"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)

    (rec_path := store.record_path(tmp_path / "ddp", "ddp", plan.run_id)).unlink()  # train it again, one process
    with pytest.raises(store.StoreError, match="sharded .FSDP. checkpoint.*as many processes as wrote it"):
        train(run, show_progress=False)
    assert store.read_record(rec_path)["status"] == "failed" and (shards / "latest").exists()
