"""The memory plan: its activation count against what autograd really saves, its states against the tensors an
AdamW step really holds, and the choices it makes (DDP, FSDP, micro-batch, refusal) at known capacities."""

import pytest
import torch
import torch.nn.functional as F

from scaling import memory
from scaling.compose import compose
from scaling.flops import count
from scaling.memory import GIB, USABLE_FRACTION, need, plan_parallel
from scaling.model import build_model

SMALL = ["model.d_model=64", "model.n_layers=2", "model.seq_len=64"]


def saved_activation_bytes_per_token(run, rows: int = 4) -> float:
    """Bytes autograd keeps for the backward pass of one training forward, per token (parameters excluded)."""
    model = build_model(run.model)
    params = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    x = torch.randint(0, run.model.vocab_size, (rows, run.model.seq_len))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        F.cross_entropy(model(x).float().flatten(0, 1), x.flatten())
    return sum(seen.values()) / (rows * run.model.seq_len)


@pytest.mark.parametrize("variant", [
    [], ["model.n_experts=1", "model.top_k=1"], ["model.n_layers=4"], ["model.d_model=128"], ["model.qk_norm=false"],
    ["model.n_shared_experts=1"], ["model.n_kv_heads=2"], ["model.n_experts=32", "model.top_k=4", "model.d_expert=32"],
    ["model.vocab_size=4096"], ["model.n_layers=3", "model.n_dense_layers=1"],
])
def test_the_activation_count_is_what_autograd_saves(variant):
    run = compose(SMALL + variant)
    measured = saved_activation_bytes_per_token(run)
    assert memory.activation_bytes_per_token(run.model, 4) == pytest.approx(measured, rel=0.05)


def test_the_states_are_what_an_adamw_step_holds():
    run = compose(SMALL)
    model = build_model(run.model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, run.model.vocab_size, (2, run.model.seq_len))
    F.cross_entropy(model(x).flatten(0, 1), x.flatten()).backward()
    opt.step()
    held = sum(p.numel() * 4 for p in model.parameters()) + sum(p.grad.numel() * 4 for p in model.parameters())
    held += sum(v.numel() * v.element_size() for s in opt.state.values() for k, v in s.items() if k != "step")
    assert need(run.model, 1, 1, "ddp", on_gpu=False).states == held == 16 * count(run.model).params_total


def test_fsdp_splits_the_states_and_gathers_one_block_at_a_time():
    m = compose(SMALL).model
    single, sharded = need(m, 4, 1, "ddp", False), need(m, 4, 4, "fsdp", False)
    assert sharded.states == single.states / 4
    assert sharded.working == 4 * (count(m).params_embedding + count(m).params_head + m.d_model) + \
        (3 * 4 + 4) * memory.block_params(m)
    assert sharded.activations == single.activations  # the same micro-batch of rows
    assert need(m, 4, 2, "ddp", False).working == 4 * count(m).params_total  # the flat all-reduce buffer


# a 256-expert layer stack: about 3.1e9 parameters, 49 GB of states (the activation-ratio preset's largest cell)
BIG = compose(["model.d_model=768", "model.n_layers=14", "model.n_heads=12", "model.d_expert=384",
               "model.n_experts=256", "model.top_k=2", "model.n_shared_experts=1", "model.seq_len=2048",
               "model.vocab_size=50304"]).model


def test_the_plan_prefers_a_replica_then_smaller_micro_batches_then_sharding():
    rows = 256
    roomy = plan_parallel(BIG, rows, 8, "auto", True, 1000 * GIB)
    assert (roomy.parallel, roomy.micro_batch, roomy.fits) == ("ddp", 32, True)  # 256 rows over 8 GPUs, at once
    tight = plan_parallel(BIG, rows, 8, "auto", True, 80 * GIB)
    assert tight.parallel == "ddp" and tight.micro_batch < 32 and tight.fits
    assert need(BIG, tight.micro_batch * 2, 8, "ddp", True).total > USABLE_FRACTION * 80 * GIB  # the largest fit
    small = plan_parallel(BIG, rows, 8, "auto", True, 40 * GIB)  # 49 GB of states alone: shard them
    assert small.parallel == "fsdp" and small.fits and small.need.states == 16 * count(BIG).params_total / 8
    assert plan_parallel(BIG, rows, 8, "ddp", True, 40 * GIB).fits is False  # as asked, even when it cannot fit


def test_a_run_too_big_for_its_devices_is_refused_with_its_numbers_and_the_fix():
    plan = plan_parallel(BIG, 64, 1, "auto", True, 24 * GIB)
    assert plan.fits is False and plan.min_devices == 4
    reason = plan.reason()
    assert "GiB per device under single on 1 device(s)" in reason and "states 49.1" in reason
    assert "at least 4 devices, sharded (launcher.gpus_per_run or max_gpus_per_run, nodes_per_run)" in reason
    assert plan_parallel(BIG, 64, 4, "auto", True, 24 * GIB).fits  # ... and on 4 it does


def test_unknown_memory_gives_no_verdict_and_all_rows_at_once():
    plan = plan_parallel(BIG, 64, 2, "auto", True, None)
    assert plan.fits is None and plan.reason() is None and (plan.parallel, plan.micro_batch) == ("ddp", 32)
