"""`plan_layout` and `scaling layout`: the seed's case (the head and loss overload the last stage), published
shapes on 8 and 16 stages laid out validly for Megatron-Core and torchtitan alike."""

import json

import pytest

from scaling.compose import compose
from scaling.layout.engines import check_megatron_layout, parse_megatron_layout
from scaling.layout.plan import Cluster, LayoutError, plan_layout
from tests.inprocess import scaling


def test_the_seeds_case_an_even_split_overloads_the_last_stage_and_the_balanced_one_moves_layers_off_it():
    """A 16-layer model whose head + loss (vocabulary 126k) costs several layers, on 8 stages: under the even split
    the last stage is the slowest; the balanced split gives the first and last stages fewer layers and the
    simulation shows the gain."""
    model = compose(["model.d_model=2048", "model.n_layers=16", "model.n_heads=16", "model.seq_len=4096",
                     "model.vocab_size=126464", "model.n_experts=64", "model.top_k=4", "model.d_expert=512"]).model
    plan = plan_layout(model, 512, Cluster(pp=8, memory_per_gpu_gb=80))
    even = [f + b for f, b in zip(plan.even.forward_s, plan.even.backward_s, strict=True)]
    assert max(range(8), key=even.__getitem__) == 7
    layers = [sum(plan.units[i].kind == "t" for i in s) for s in plan.balanced.split.stages]
    assert layers[-1] < 2 and layers[0] <= 2 and max(layers[1:-1]) >= 3 and sum(layers) == 16
    assert plan.balanced.simulation.step_s < 0.8 * plan.even.simulation.step_s


@pytest.mark.parametrize("preset", ["deepseek_v3_like", "ling_1t_like"])
@pytest.mark.parametrize("pp,vpp", [(8, 1), (16, 1), (8, 2), (16, 2)])
def test_published_shapes_are_laid_out_validly_for_megatron_and_torchtitan_alike(preset, pp, vpp):
    run = compose([f"model={preset}", "train.batch_size=8192"])
    plan = plan_layout(run.model, run.train.batch_size, Cluster(gpus=4096, pp=pp, vpp=vpp, ep=32, mtp_layers=1,
                                                                recompute=True))
    layout = plan.megatron_layout()
    assert check_megatron_layout(layout, pp, run.model.n_layers, 1) == []
    stages = parse_megatron_layout(layout)
    assert stages == ["".join(plan.units[i].kind for i in s) for s in plan.balanced.split.stages]
    fqns = plan.torchtitan_fields()["module_fqns_per_model_part"]
    assert [[f for i in s for f in plan.units[i].fqns] for s in plan.balanced.split.stages] == fqns
    assert sum(len([f for f in part if f.startswith("layers.")]) for part in fqns) == run.model.n_layers
    assert plan.balanced.simulation.step_s <= plan.even.simulation.step_s * (1 + 1e-9)
    assert max(plan.balanced.memory_bytes_per_rank) <= plan.capacity_bytes


def test_deepseek_v3_on_16_stages_of_2_gets_the_layout_megatron_documents_for_it():
    run = compose(["model=deepseek_v3_like", "train.batch_size=15360"])
    plan = plan_layout(run.model, 15360, Cluster(gpus=2048, pp=16, vpp=2, ep=64, mtp_layers=1, recompute=True))
    assert parse_megatron_layout(plan.megatron_layout()) == parse_megatron_layout("Et*3|(tt|)*29,m|L")


def test_a_layout_that_cannot_fit_says_what_to_change():
    run = compose(["model=deepseek_v3_like"])
    with pytest.raises(LayoutError, match="no split of 63 units over 4 stages fits.*--ep"):
        plan_layout(run.model, 1024, Cluster(pp=4))


def test_the_command_prints_the_table_and_the_engines_settings_and_json():
    args = ["layout", "model.d_model=512", "model.n_layers=8", "model.n_heads=8", "model.vocab_size=50304",
            "train.batch_size=64", "--pp", "4"]
    out = scaling(*args)
    assert out.returncode == 0, out.stderr
    assert "balanced" in out.stdout and "--pipeline-model-parallel-layout" in out.stdout
    assert "[parallelism]" in out.stdout and "module_fqns_per_model_part" in out.stdout
    payload = json.loads(scaling(*args, "--json").stdout)
    assert payload["pp"] == 4 and payload["speedup"] >= 1
    assert check_megatron_layout(payload["megatron"]["layout"], 4, 8) == []
    bad = scaling("layout", "--pp", "3", "--gpus", "8")
    assert bad.returncode == 2 and "--gpus 8 is not a multiple of --pp 3" in bad.stderr
