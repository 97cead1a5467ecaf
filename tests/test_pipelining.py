"""train.parallel=pipeline: the stages chain to the whole model, splits are refused in one line when wrong, and
(`make test-distributed`) a run trained through a real 2-stage pipeline is the single-process run, resumes from
its checkpoint like one, and records its layout and stage times."""

import pytest
import torch

from scaling.compose import compose
from scaling.config import ConfigError
from scaling.model import build_model
from scaling.pipelining import StageModule, split_of

DENSE = ["model.d_model=32", "model.n_heads=2", "model.n_layers=4", "model.n_dense_layers=4", "model.d_ff_dense=64",
         "model.seq_len=32", "model.vocab_size=512"]


def test_the_stages_of_a_split_chain_to_the_whole_model():
    m = compose(DENSE).model
    model = build_model(m)
    x = torch.randint(0, 512, (2, 32))
    for spec, stages in (("even", 2), ("Et|ttt|L", 3), ("Ettt|tL", 2)):
        split, units = split_of(spec, m, stages, 1)
        h, at = x, 0
        for k, stage in enumerate(split.stages):
            n = sum(units[i].kind == "t" for i in stage)
            h = StageModule(model, at, at + n, embed=k == 0, head=k == len(split.stages) - 1)(h)
            at += n
        assert torch.equal(h, model(x))


def test_a_wrong_layout_string_or_fp8_diagnostics_are_refused_in_one_line():
    m = compose(DENSE).model
    with pytest.raises(ValueError, match="train.pipeline_split='Et\\|tL': 2 decoder layers \\(t\\), the model has 4"):
        split_of("Et|tL", m, 2, 1)
    with pytest.raises(ValueError, match="3 stages are not a multiple of the pipeline size 2"):
        split_of("Et|tt|tL", m, 2, 1)
    with pytest.raises(ConfigError, match="train.diagnostics_every with train.parallel=pipeline is not supported"):
        compose(["train.parallel=pipeline", "train.diagnostics_every=10"])
    with pytest.raises(ConfigError, match="2 decoder layers \\(t\\), the model has 4 \\(or use even or balanced\\)"):
        compose([*DENSE, "train.parallel=pipeline", "train.pipeline_split=Et|tL"])  # before anything trains


@pytest.mark.slow
@pytest.mark.distributed
def test_a_run_through_a_two_stage_pipeline_is_the_single_process_run(tmp_path):
    """The balanced split (on unit times measured here), 1F1B over 8 micro-batches: the curve and the held-out
    loss of one process, to 1e-4; the record names the layout and each stage's times."""
    from scaling import store
    from scaling.run import plan_run
    from scaling.train import train
    from tests.test_distributed import torchrun, write_run

    overrides = DENSE + ["budget_flops=3e9", "train.batch_size=8", "train.micro_batch_size=1", "data.val_tokens=2048",
                         "train.device=cpu", "train.threads=1", "sweep=ddp", "train.parallel=pipeline"]
    run, path = write_run(tmp_path, overrides)
    out, _ = torchrun(path).communicate(timeout=300)
    plan = plan_run(run)
    rec = store.read_record(store.record_path(tmp_path / "ddp", "ddp", plan.run_id))
    single = train(compose(overrides[:-1] + [f"results_dir={tmp_path / 'single'}"]), show_progress=False)
    assert rec["status"] == single["status"] == "completed", out
    assert rec["provenance"]["parallel"] == "pipeline" and rec["provenance"]["processes"] == 2
    assert rec["results"]["val_loss"] == pytest.approx(single["results"]["val_loss"], abs=1e-4)
    for a, b in zip(rec["results"]["curve"], single["results"]["curve"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-4)
    p = rec["results"]["pipeline"]
    assert p["layout"] == rec["provenance"]["pipeline_layout"] and len(p["stages"]) == 2
    assert p["step_s"] > 0 and all(s["forward_s"] > 0 and s["backward_s"] > 0 for s in p["stages"])
    assert set(p["unit_seconds"]) >= {"embedding", "head + loss", "layer 0 (dense)"}


@pytest.mark.slow
@pytest.mark.distributed
def test_an_moe_run_through_a_two_stage_pipeline_is_the_single_process_run(tmp_path):
    """Routing: each stage's z-loss joins its micro-batches' backward there, and the expert loads counted on each
    stage are summed for the bias update and the record. Short, as the DDP test of an MoE (a last-bit difference
    of summation order can flip a top-k choice, after which runs agree only statistically)."""
    from scaling import store
    from scaling.run import plan_run
    from scaling.train import train
    from tests.test_distributed import torchrun, write_run

    overrides = ["model.d_model=32", "model.n_heads=2", "model.n_layers=4", "model.d_expert=32", "model.seq_len=32",
                 "model.vocab_size=512", "budget_flops=6e8", "train.batch_size=4", "train.micro_batch_size=1",
                 "data.val_tokens=2048", "train.device=cpu", "train.threads=1", "sweep=ddp",
                 "train.parallel=pipeline", "train.pipeline_split=even"]
    run, path = write_run(tmp_path, overrides)
    out, _ = torchrun(path).communicate(timeout=300)
    plan = plan_run(run)
    assert 8 <= plan.steps <= 40
    rec = store.read_record(store.record_path(tmp_path / "ddp", "ddp", plan.run_id))
    single = train(compose(overrides[:-2] + [f"results_dir={tmp_path / 'single'}"]), show_progress=False)
    assert rec["status"] == single["status"] == "completed", out
    assert rec["results"]["val_loss"] == pytest.approx(single["results"]["val_loss"], abs=1e-4)
    for a, b in zip(rec["results"]["curve"], single["results"]["curve"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    flat = [share for layer in rec["results"]["expert_load"] for share in layer]
    assert flat == pytest.approx([share for layer in single["results"]["expert_load"] for share in layer], abs=1e-6)


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.lifecycle
def test_a_pipeline_run_stopped_on_one_rank_resumes_from_its_checkpoint_to_the_single_process_result(tmp_path):
    """SIGUSR2 to one rank of a 2-stage pipeline: every rank stops at the same step, rank 0 writes the (ordinary,
    single-process) checkpoint, and the rerun resumes from it and ends where one uninterrupted process does."""
    from scaling import store
    from scaling.run import plan_run
    from scaling.train import train
    from tests.test_distributed import stop_one_rank_once_training, torchrun, write_run

    overrides = DENSE + ["budget_flops=2e10", "train.batch_size=8", "train.micro_batch_size=2",
                         "data.val_tokens=2048", "train.device=cpu", "train.threads=1", "sweep=ddp",
                         "train.checkpoint_every=100000", "train.parallel=pipeline", "train.pipeline_split=even"]
    run, path = write_run(tmp_path, overrides)
    plan = plan_run(run)
    rec_path = store.record_path(tmp_path / "ddp", "ddp", plan.run_id)
    out = stop_one_rank_once_training(torchrun(path), rec_path, settle_s=1.0)
    rec = store.read_record(rec_path)
    assert rec["status"] == "failed" and rec["error"]["kind"] == "interrupted", (rec.get("error"), out)
    stopped = rec["error"]["step"]
    assert 0 < stopped < plan.steps and store.checkpoint_path(tmp_path / "ddp", "ddp", plan.run_id).exists()
    out, _ = torchrun(path).communicate(timeout=300)
    rec = store.read_record(rec_path)
    assert rec["status"] == "completed" and rec["provenance"]["resumed_from_steps"] == [stopped], out
    single = train(compose(overrides[:-2] + [f"results_dir={tmp_path / 'single'}"]), show_progress=False)
    assert rec["results"]["val_loss"] == pytest.approx(single["results"]["val_loss"], abs=1e-4)
