"""Routing, dispatch and balancing of the MoE layer."""

import pytest
import torch
import torch.nn.functional as F

from scaling.config import ModelConfig
from scaling.model.moe import HAS_GROUPED_MM, MoE


def reference_moe_forward(moe: MoE, x_BTD: torch.Tensor) -> torch.Tensor:
    """A slow per-expert mask loop computing the same function as MoE.forward; the test's independent reference."""
    B, T_, D = x_BTD.shape
    x_TD = x_BTD.reshape(-1, D)
    ids_TK, weights_TK = moe.route(x_TD)
    out_TD = torch.zeros_like(x_TD)
    for e in range(moe.n_experts):
        tok, slot = torch.where(ids_TK == e)
        if tok.numel() == 0:
            continue
        gate, up = (x_TD[tok] @ moe.w_gate_up_EDF[e]).chunk(2, dim=-1)
        y = (F.silu(gate) * up) @ moe.w_down_EFD[e]
        out_TD = out_TD.index_add(0, tok, y * weights_TK[tok, slot].unsqueeze(-1))
    if moe.shared is not None:
        out_TD = out_TD + moe.shared(x_TD)
    return out_TD.view(B, T_, D)


def make_moe(**kw) -> MoE:
    base = dict(d_model=32, n_experts=8, top_k=2, d_expert=16, init_std=0.5)
    base.update(kw)
    torch.manual_seed(0)
    moe = MoE(ModelConfig(**base))
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return moe


def grads_of(moe: MoE, x: torch.Tensor, fn) -> tuple[torch.Tensor, dict]:
    moe.zero_grad()
    x = x.clone().requires_grad_(True)
    y = fn(moe, x)
    y.backward(torch.ones_like(y) * 0.1 + y.detach())  # a non-trivial, contiguous output gradient
    return y.detach(), {"x": x.grad.clone(), **{n: p.grad.clone() for n, p in moe.named_parameters()}}


DISPATCHES = ["slices"] + (["grouped_mm"] if HAS_GROUPED_MM else [])


@pytest.mark.parametrize("dispatch", DISPATCHES)
@pytest.mark.parametrize("extra", [{}, {"n_shared_experts": 1}, {"score_func": "sigmoid"}, {"top_k": 1}])
def test_sorted_dispatch_matches_per_expert_loop(dispatch, extra):
    moe = make_moe(dispatch=dispatch, **extra)
    x = torch.randn(3, 5, 32)
    y, g = grads_of(moe, x, lambda m, x: m(x))
    y_ref, g_ref = grads_of(moe, x, reference_moe_forward)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    assert g.keys() == g_ref.keys()
    for name in g:
        torch.testing.assert_close(g[name], g_ref[name], atol=1e-5, rtol=1e-5, msg=name)


@pytest.mark.parametrize("dispatch", DISPATCHES)
def test_experts_that_receive_no_tokens(dispatch):
    moe = make_moe(dispatch=dispatch, n_experts=8, top_k=1)
    with torch.no_grad():  # route everything to experts 2 and 5 only
        moe.expert_bias_E[:] = -10.0
        moe.expert_bias_E[[2, 5]] = 10.0
    x = torch.randn(2, 6, 32)
    y, g = grads_of(moe, x, lambda m, x: m(x))
    y_ref, g_ref = grads_of(moe, x, reference_moe_forward)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    for name in g:
        torch.testing.assert_close(g[name], g_ref[name], atol=1e-5, rtol=1e-5, msg=name)
    idle = [e for e in range(8) if e not in (2, 5)]
    assert torch.all(g["w_gate_up_EDF"][idle] == 0)
    assert moe.load_E[idle].sum() == 0 and moe.load_E.sum() == 2 * 6 * 2  # two forward passes, k=1


@pytest.mark.skipif(not HAS_GROUPED_MM, reason="torch._grouped_mm not in this torch")
def test_grouped_and_slices_agree():
    a, b = make_moe(dispatch="grouped_mm"), make_moe(dispatch="slices")
    b.load_state_dict(a.state_dict())
    x = torch.randn(4, 7, 32)
    ya, ga = grads_of(a, x, lambda m, x: m(x))
    yb, gb = grads_of(b, x, lambda m, x: m(x))
    torch.testing.assert_close(ya, yb, atol=1e-5, rtol=1e-5)
    for name in ga:
        torch.testing.assert_close(ga[name], gb[name], atol=1e-5, rtol=1e-5, msg=name)


def test_topk_weights_renormalised_and_loads_counted():
    moe = make_moe(top_k=3, norm_topk=True)
    x = torch.randn(10, 32)
    ids, w = moe.route(x)
    assert ids.shape == (10, 3) and len(set(ids[0].tolist())) == 3
    torch.testing.assert_close(w.sum(-1), torch.ones(10))
    assert moe.load_E.sum() == 30


def test_aux_free_bias_moves_towards_balance():
    moe = make_moe(balancing="aux_free", bias_update_rate=0.1)
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[0] = 1.0  # logits favour expert 0 for most inputs
    x = torch.randn(64, 32).abs()
    moe.route(x)
    before = moe._step_load_E.clone()
    moe.update_bias()
    assert before[0] == before.max()
    assert moe.expert_bias_E[0] < 0  # over-loaded: bias lowered
    assert (moe.expert_bias_E[before < before.mean()] > 0).all()  # under-loaded: bias raised


def test_aux_loss_and_z_loss():
    moe = make_moe(balancing="aux_loss")
    moe.train()
    moe.route(torch.randn(50, 32))
    assert moe.aux_loss.item() >= 1.0 - 1e-6  # E * sum f_e P_e >= 1, equality at perfect balance
    assert moe.z_loss.item() > 0
    moe_free = make_moe(balancing="aux_free")
    moe_free.route(torch.randn(50, 32))
    assert moe_free.aux_loss.item() == 0


def test_dense_single_expert_equals_swiglu():
    moe = make_moe(n_experts=1, top_k=1, d_expert=24)
    x = torch.randn(2, 3, 32)
    w_gu, w_dn = moe.w_gate_up_EDF[0], moe.w_down_EFD[0]
    gate, up = (x @ w_gu).chunk(2, -1)
    torch.testing.assert_close(moe(x), (torch.nn.functional.silu(gate) * up) @ w_dn, atol=1e-5, rtol=1e-5)


def _swiglu_formula(h):
    gate, up = h.chunk(2, dim=-1)
    return torch.nn.functional.silu(gate) * up


@pytest.mark.parametrize("compiled", [False, True])
def test_swiglu_activation_backward_matches_autograd_of_the_formula(compiled):
    """The eager activation writes both gradient halves into one tensor; under compile the formula is traced."""
    from scaling.model.moe import swiglu

    fn = torch.compile(swiglu, fullgraph=True) if compiled else swiglu
    h = torch.randn(37, 2 * 24, dtype=torch.float64 if not compiled else torch.float32, requires_grad=True)
    grad = torch.randn(37, 24, dtype=h.dtype)
    (got,), out = torch.autograd.grad(fn(h), h, grad), fn(h)
    (want,), ref = torch.autograd.grad(_swiglu_formula(h), h, grad), _swiglu_formula(h)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
