"""WSD cooldowns branched from one stable phase (scaling/branching.py): which runs share it, what a sweep trains
and saves, and that a branched run is the unbranched run of the same length."""

import dataclasses
from pathlib import Path

import pytest

from scaling import branching, store
from scaling.compose import compose
from scaling.config import ConfigError
from scaling.run import plan_run
from scaling.sweep.plan import compose_sweep, plan_sweep
from scaling.train import train
from tests.inprocess import scaling

SWEEP = str(Path(__file__).parent / "sweeps" / "branch.yaml")
TINY = ["model.d_model=32", "model.n_heads=2", "model.d_expert=32", "model.seq_len=64", "train.batch_size=4",
        "data.val_tokens=2048", "train.schedule=wsd", "train.warmup_steps=3", "train.branch=true",
        "train.eval_every=8", "train.checkpoint_every=5", "train.lr=3e-3"]
BUDGETS = (2e9, 4e9, 8e9)


def _run(budget, *extra):
    return compose(TINY + [f"budget_flops={budget:g}", *extra])


def _family(run):
    return branching.family(run, plan_run(run).steps)


def test_runs_that_differ_only_in_budget_and_decay_share_a_family():
    base = _family(_run(2e9))
    assert base is not None
    assert _family(_run(8e9)) == base
    assert _family(_run(8e9, "train.decay_fraction=0.3", "train.min_lr_ratio=0.05")) == base
    for other in (["train.lr=1e-3"], ["seed=1"], ["train.warmup_steps=4"], ["model.d_model=64", "model.d_expert=64"]):
        assert _family(_run(2e9, *other)) != base, other
    assert _family(_run(2e9, "train.branch=false")) is None
    # a warmup that is a fraction of the run is not shared by runs of other lengths
    fraction = [_family(_run(b, "train.warmup_steps=0", "train.warmup_fraction=0.1")) for b in BUDGETS]
    assert len(set(fraction)) == 3


def test_branching_needs_wsd_and_a_warmup_that_ends_before_the_decay():
    with pytest.raises(ConfigError, match="train.branch=True has no effect without train.schedule=wsd"):
        _run(2e9, "train.schedule=cosine")
    with pytest.raises(ConfigError, match=r"warmup_steps=40 does not fit a run of 45 steps .* decay starts at step 36"):
        plan_run(_run(2e9, "train.warmup_steps=40"))


def test_each_cell_trains_from_its_predecessors_decay_start_and_the_plan_says_what_that_saves():
    plan = plan_sweep(compose_sweep(SWEEP))
    cells = sorted(plan.cells, key=lambda c: c.plan.steps)
    starts = [branching.branch_step(c.plan.run, c.plan.steps) for c in cells]
    before = plan.branch_predecessors()
    assert cells[0].run_id not in before
    assert before[cells[1].run_id][::2] == (cells[0].run_id, starts[0])
    assert before[cells[2].run_id][::2] == (cells[1].run_id, starts[1])
    trained = plan.trained_tokens()
    batch = cells[0].plan.batch_tokens
    assert trained[cells[2].run_id] == cells[2].plan.tokens - starts[1] * batch
    saved = plan.total_flops - plan.trained_flops
    assert saved == pytest.approx(sum(s * batch * c.plan.counts.M for s, c in zip(starts[:2], cells[1:], strict=True)))
    out = scaling("sweep", SWEEP, "--dry-run", "--no-probe")
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert f"saving {saved:.3g} FLOPs" in text and "2 cell(s) branch their cooldown" in text


def _fields(record):
    r = record["results"]
    return r["val_loss"], [(p["step"], p["train_loss"], p["lr"]) for p in r["curve"]], r["evals"], r["steps_done"]


def _same(a, b):
    (va, ca, ea, sa), (vb, cb, eb, sb) = _fields(a), _fields(b)
    assert sa == sb and [p[0] for p in ca] == [p[0] for p in cb]
    assert va == pytest.approx(vb, rel=1e-6, abs=1e-6)
    for k in (1, 2):  # train loss, lr
        assert [p[k] for p in ca] == pytest.approx([p[k] for p in cb], rel=1e-6, abs=1e-6)
    assert [e["step"] for e in ea] == [e["step"] for e in eb]
    assert [e["val_loss"] for e in ea] == pytest.approx([e["val_loss"] for e in eb], rel=1e-6, abs=1e-6)


def test_branched_runs_equal_unbranched_wsd_runs_of_the_same_lengths(tmp_path):
    branched = [train(_run(b, f"results_dir={tmp_path / 'branched'}"), show_progress=False) for b in BUDGETS]
    alone = [train(_run(b, f"results_dir={tmp_path / 'alone'}", "train.branch=false"), show_progress=False)
             for b in BUDGETS]
    steps = [r["derived"]["steps"] for r in branched]
    starts = [branching.branch_step(_run(b), s) for b, s in zip(BUDGETS, steps, strict=True)]
    assert [r["results"]["branched_from_step"] for r in branched] == [0, starts[0], starts[1]]
    assert [r["results"]["branched_from_step"] for r in alone] == [0, 0, 0]
    assert [r["id"] for r in branched] == [r["id"] for r in alone]  # the flag is not part of what is trained
    for b, a in zip(branched, alone, strict=True):
        _same(b, a)


def test_a_branched_run_that_fails_resumes_from_its_own_checkpoint(tmp_path, monkeypatch):
    import scaling.train as train_mod

    where = f"results_dir={tmp_path / 'r'}"
    train(_run(2e9, where), show_progress=False)
    real = train_mod._final_evaluation

    def broken(*a, **k):  # every step trained, then the final evaluation fails
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(train_mod, "_final_evaluation", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        train(_run(4e9, where), show_progress=False)
    monkeypatch.setattr(train_mod, "_final_evaluation", real)
    done = train(_run(4e9, where), show_progress=False)
    assert done["status"] == "completed" and done["provenance"]["resumed_from_steps"]
    assert done["results"]["branched_from_step"] > 0
    _same(done, train(_run(4e9, f"results_dir={tmp_path / 'alone'}", "train.branch=false"), show_progress=False))


def test_a_sweep_with_two_workers_branches_its_cells_and_removes_the_stable_states(tmp_path):
    out = scaling("sweep", SWEEP, "--results-dir", tmp_path, "--no-probe", "--no-progress", "--workers", "2")
    assert out.returncode == 0, out.stderr
    plan = plan_sweep(compose_sweep(SWEEP), results_dir=str(tmp_path))
    cells = sorted(plan.cells, key=lambda c: c.plan.steps)
    records = [store.read_record(store.record_path(tmp_path, "branch", c.run_id)) for c in cells]
    assert all(r["status"] == "completed" for r in records)
    froms = [r["results"]["branched_from_step"] for r in records]
    starts = [branching.branch_step(c.plan.run, c.plan.steps) for c in cells]
    assert froms[0] == 0 and 0 < froms[1] <= starts[1] and 0 < froms[2] <= starts[2]
    assert not (tmp_path / "branch" / "stable").exists() or not any((tmp_path / "branch" / "stable").iterdir())
    alone = train(dataclasses.replace(cells[2].plan.run, results_dir=str(tmp_path / "alone"),
                                      train=dataclasses.replace(cells[2].plan.run.train, branch=False)),
                  show_progress=False)
    _same(records[2], alone)
