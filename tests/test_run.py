"""A run before it trains (scaling/run.py): budget arithmetic, identity, names, provenance, and no torch."""

import subprocess
import sys

import pytest

from scaling import flops
from scaling.compose import compose, with_updates
from scaling.config import ConfigError
from scaling.data import DataError, TokenData
from scaling.data.tokens import DataSummary, Source, TokenStream
from scaling.run import cell_name, check_fits, first_provenance, plan_run, run_id, short_number, with_data_vocab


@pytest.mark.parametrize("module", ["scaling.run", "scaling.sweep.plan", "scaling.sweep.run_cell",
                                    "scaling.sweep.local", "scaling.sweep.slurm", "scaling.advise.pipeline"])
def test_planning_and_launching_load_no_torch(module):
    """The planner, the launchers, run_cell and the fit import neither torch nor the trainer (a fresh process:
    this one has torch loaded already)."""
    code = (f"import sys, {module}; print(sorted(m for m in ('torch', 'scaling.train', 'scaling.model') "
            f"if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_a_dry_run_plans_without_torch(tmp_path):
    code = ("import sys; from scaling.cli import app; sys.argv = ['scaling', 'train', '--dry-run', "
            "'budget_flops=3e11']\ntry:\n    app()\nexcept SystemExit:\n    pass\n"
            "print('torch loaded' if 'torch' in sys.modules else 'no torch')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "no torch" in out.stdout and "steps" in out.stdout, out.stdout + out.stderr


def test_the_plan_spends_the_budget_in_whole_sequences_and_steps():
    run = compose(["budget_flops=3e11", "train.batch_size=16"])
    plan = plan_run(run)
    M = flops.count(run.model).M
    assert plan.counts.M == M and plan.tokens % run.model.seq_len == 0
    assert abs(plan.tokens * M / run.budget_flops - 1) < 0.01
    assert (plan.steps - 1) * 16 + plan.last_batch_size == plan.tokens // run.model.seq_len
    assert 1 <= plan.last_batch_size <= 16 and plan.batch_size_at(plan.steps - 1) == plan.last_batch_size
    assert plan.batch_size_at(0) == 16 and plan.tokens_after(plan.steps) == plan.tokens
    assert plan.tokens_after(1) == plan.batch_tokens == 16 * run.model.seq_len
    assert plan.x_axes(plan.steps) == {"tokens": plan.tokens, "flops": plan.tokens * M}
    derived = plan.derived()
    assert derived["steps"] == plan.steps and derived["data_fingerprint"] == plan.data.fingerprint
    assert plan.tags()[0] == "C=3e11"


def test_too_small_a_budget_is_refused_with_the_budget_that_would_do():
    with pytest.raises(ConfigError, match=r"less than one optimizer step.*raise budget_flops to at least"):
        plan_run(compose(["budget_flops=1e6"]))


def test_the_id_follows_what_is_trained_and_the_name_reads_the_cell():
    run = compose(["budget_flops=3e11"])
    assert run_id(run) == run_id(compose(["budget_flops=3e11"])) and len(run_id(run)) == 12
    assert run_id(with_updates(run, {"train.lr": 1e-3})) != run_id(run)
    assert run_id(with_updates(run, {"seed": 1})) != run_id(run)
    assert run_id(with_updates(run, {"results_dir": "/elsewhere"})) == run_id(run)  # where, not what
    counts = flops.count(run.model)
    assert cell_name(run, counts, 4096) == f"C3e11-A{counts.activation_ratio:.3g}-G1-lr3e-3-B4k"
    assert cell_name(run, counts, 1000).endswith("-B1000")
    assert [short_number(x) for x in (3e11, 1.5e-3, 1e12, 2.25e9)] == ["3e11", "1.5e-3", "1e12", "2.2e9"]


def test_the_data_must_hold_the_run():
    import numpy as np

    run = compose(["budget_flops=3e11"])

    def data(n_train, vocab):
        stream = TokenStream([np.zeros(n_train, np.uint16)])
        return TokenData([Source(stream, TokenStream([np.zeros(100, np.uint16)]))], "x", "test", vocab).summary()

    with pytest.raises(DataError, match=r"holds 1,000 \(10.00 epochs\).*allow_repeat=true"):
        check_fits(run, 10_000, data(1000, 256))
    with pytest.raises(DataError, match="set model.vocab_size=512"):
        check_fits(run, 10_000, data(10**6, 512))
    unknown = DataSummary("shards", [None], [1.0], None, None, where="missing")
    check_fits(run, 10**12, unknown)  # what is not known is not checked (a dry run without the data)


def test_a_null_vocabulary_is_the_datas_rounded_up():
    summary = DataSummary("shards", [10**9], [1.0], 50257, "f")
    run = with_data_vocab(compose(["model.vocab_size=null", "data.source=shards", "data.path=/x"]), summary)
    assert run.model.vocab_size == 50304
    assert run_id(run) == run_id(compose(["model.vocab_size=50304", "data.source=shards", "data.path=/x"]))
    with pytest.raises(ConfigError, match="model.vocab_size=null takes the vocabulary from the data"):
        with_data_vocab(compose(["model.vocab_size=null"]), DataSummary("shards", [None], [1.0], None, None))


def test_provenance_starts_with_code_data_and_seed():
    plan = plan_run(compose(["budget_flops=3e11", "seed=3"]))
    p = first_provenance(plan)
    assert p["seed"] == 3 and p["attempts"] == 0
    assert p["data_fingerprint"] == plan.data.fingerprint == plan.summary.fingerprint
    assert p["code_version"] and p["created"].endswith("+00:00")
