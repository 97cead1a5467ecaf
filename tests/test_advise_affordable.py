"""The activation ratio a cluster can afford: without a memory limit the leverage law's best A, under one that
binds a higher A (fewer experts, fewer total parameters) that fits, with the EL given up; the recommendation and
its overrides carry it."""

import pandas as pd
import pytest

from scaling.advise.affordable import affordable_activation, scale_model
from scaling.advise.recommend import recommend
from scaling.config import ModelConfig, RunConfig, TrainConfig, to_dict
from scaling.fit.law import LawFit
from scaling.fit.report import FitReport
from scaling.flops import count
from scaling.memory import GIB, USABLE_FRACTION, need

# EL(A) = Ahat^alpha with Ling-like saturation, fitted over A in [1/86, 0.6] (the activation-ratio preset's range)
LAW = LawFit("leverage", "el_activation", ("A",), {"alpha": -0.6, "A_start": 0.02, "A_max": 1e3},
             fitted_range={"A": [3 / 257, 0.6]}, verdict={"verdict": "reliable", "reasons": [], "advice": []})
FAMILY = ModelConfig(d_model=128, n_layers=4, n_heads=4, d_expert=64, n_experts=16, top_k=2, n_shared_experts=1,
                     seq_len=2048, vocab_size=50304)


def test_scaling_the_family_keeps_its_shape_and_reaches_the_active_size():
    big = scale_model(FAMILY, 2e9)
    assert count(big).params_active_non_embedding == pytest.approx(2e9, rel=0.15)
    assert big.d_model // big.n_heads == FAMILY.d_model // FAMILY.n_heads  # head width kept
    assert 2 * big.d_model / big.d_expert == pytest.approx(2 * FAMILY.d_model / FAMILY.d_expert, rel=0.05)  # G
    assert (big.top_k, big.n_shared_experts) == (FAMILY.top_k, FAMILY.n_shared_experts)


def test_without_a_binding_limit_the_lowest_A_in_range_and_under_one_a_higher_A_that_fits():
    model = scale_model(FAMILY, 2e9)
    free = affordable_activation(LAW, model, 256, 1e22, 4.0, 10_000, 8)
    assert not free["binds"] and free["chosen"]["A"] == pytest.approx(3 / 257)  # E = 256: the law's best
    limited = affordable_activation(LAW, model, 256, 1e22, 4.0, 80, 8)
    chosen, best = limited["chosen"], limited["unconstrained"]
    assert limited["binds"] and chosen["A"] > best["A"] and chosen["fits"]
    assert chosen["params_total"] < best["params_total"] and limited["el_given_up"] > 1
    assert limited["el_given_up"] == pytest.approx(best["el"] / chosen["el"])
    one_more = model.__class__(**{**model.__dict__, "n_experts": chosen["n_experts"] + 1})
    assert need(one_more, 1, 8, "fsdp", True).total > USABLE_FRACTION * 80 * GIB  # the limit is tight
    more_gpus = affordable_activation(LAW, model, 256, 1e22, 4.0, 80, 64)["chosen"]
    assert more_gpus["A"] < chosen["A"]  # more GPUs afford more experts


def test_nothing_fits_is_said_with_the_numbers():
    out = affordable_activation(LAW, scale_model(FAMILY, 2e10), 256, 1e22, 4.0, 16, 1)
    assert out["chosen"] is None and "use more GPUs" in out["why"] and "GiB per GPU on 1 x 16 GiB" in out["why"]


def test_the_recommendation_under_a_memory_limit_picks_a_higher_A_and_trains_it():
    report = FitReport(laws={"leverage": LAW}, family="moe")
    config = to_dict(RunConfig(model=FAMILY, train=TrainConfig(batch_size=128)))
    runs = pd.DataFrame([{"id": "r1", "family": "moe", "budget": 1e12, "flops": 1e12, "flops_M": 1e12,
                          "params": 1e7, "activation_ratio": 3 / 17, "granularity": 4.0, "seq_len": 2048,
                          "config": config}])
    free = recommend(report, runs, 1e22)
    assert "n_experts" not in free.items and free.memory_limit is None
    limited = recommend(report, runs, 1e22, memory_per_gpu_gb=1.0, gpus=1)  # no allocation law: the family's size
    unlimited = recommend(report, runs, 1e22, memory_per_gpu_gb=100_000, gpus=1)
    assert limited.items["activation_ratio"]["value"] > unlimited.items["activation_ratio"]["value"]
    assert unlimited.items["n_experts"]["value"] == 256 and not unlimited.memory_limit["binds"]
    assert any(w.startswith("memory binds: A = ") and "x given up" in w for w in limited.warnings)
    assert f"model.n_experts={limited.items['n_experts']['value']}" in limited.overrides
    assert limited.as_dict()["memory_limit"]["chosen"]["fits"]
    assert any("judged at the swept family's own model size" in w for w in limited.warnings)
