"""Config composition and validation: impossible settings fail at load with a one-line error naming the key."""

import pytest

from scaling.config import ConfigError, compose, from_dict, identity_dict, to_dict
from scaling.train import plan_run, run_id


def test_defaults_compose_to_the_tiny_moe():
    run = compose([])
    assert (run.model.d_model, run.model.n_layers, run.model.n_experts, run.model.top_k) == (64, 2, 8, 2)
    assert run.budget_flops == 3e11
    assert run.model.balancing == "aux_free"


def test_overrides_and_model_group():
    run = compose(["budget_flops=1e12", "train.lr=4e-3", "model=tiny_dense"])
    assert run.budget_flops == 1e12 and run.train.lr == 4e-3
    assert (run.model.n_experts, run.model.top_k, run.model.d_expert) == (1, 1, 256)


@pytest.mark.parametrize(
    "override, key",
    [
        (["model.top_k=9"], "model.top_k"),
        (["model.d_model=66"], "model.d_model"),
        (["model.n_kv_heads=3"], "model.n_kv_heads"),
        (["model.score_func=relu"], "model.score_func"),
        (["model.n_dense_layers=5"], "model.n_dense_layers"),
        (["budget_flops=-1"], "budget_flops"),
        (["train.schedule=linear"], "train.schedule"),
        (["data.source=shards"], "data.path"),
        (["model.no_such_key=1"], "no_such_key"),
        (["model.d_model=abc"], "d_model"),
        (["model=no_such_model"], "no_such_model"),
    ],
)
def test_impossible_settings_fail_with_one_line_naming_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        compose(override)
    message = str(e.value)
    assert key in message
    assert "\n" not in message


def test_budget_too_small_for_one_step():
    run = compose(["budget_flops=1e6"])
    with pytest.raises(ConfigError, match="less than one optimizer step.*raise budget_flops"):
        plan_run(run)


def test_corpus_too_small_for_the_tokens():
    from scaling.data import DataError

    run = compose(["budget_flops=1e15"])
    with pytest.raises(DataError, match="training tokens.*data.allow_repeat=true"):
        plan_run(run)
    plan = plan_run(compose(["budget_flops=1e15", "data.allow_repeat=true"]))
    assert plan.derived()["epochs"] > 1


def test_run_id_is_stable_and_ignores_bookkeeping():
    a = compose(["train.lr=2e-3"])
    b = compose(["train.lr=2e-3", "results_dir=/elsewhere", "train.log_every=3", "wandb.mode=offline"])
    c = compose(["train.lr=4e-3"])
    assert run_id(a) == run_id(b) != run_id(c)
    assert identity_dict(a) == identity_dict(b)


def test_dict_round_trip():
    run = compose(["model.n_shared_experts=1"])
    assert from_dict(to_dict(run)) == run
