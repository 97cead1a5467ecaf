"""The decoder: RoPE's hand-written backward against autograd of the formula, eager and compiled."""

import pytest
import torch

from scaling.model.transformer import apply_rope, rope_tables


def rope_formula(x, cos, sin):
    x1, x2 = x.float().chunk(2, dim=-1)
    T = x.shape[-2]
    return torch.cat([x1 * cos[:T] - x2 * sin[:T], x1 * sin[:T] + x2 * cos[:T]], dim=-1).to(x.dtype)


@pytest.mark.parametrize("compiled", [False, True])
def test_rope_matches_the_formula_on_a_transposed_view(compiled):
    cos, sin = rope_tables(64, 16, 10000.0)
    x = torch.randn(2, 48, 3, 16).transpose(1, 2).requires_grad_()  # (B, H, T, Dh) view, as attention passes it
    grad = torch.randn(2, 3, 48, 16)
    fn = torch.compile(apply_rope, fullgraph=True) if compiled else apply_rope
    out = fn(x, cos, sin)
    (got,) = torch.autograd.grad(out, x, grad)
    ref = rope_formula(x, cos, sin)
    (want,) = torch.autograd.grad(ref, x, grad)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(rope_formula(out, cos, -sin), x.detach(), atol=1e-5, rtol=1e-5)  # a rotation


def test_rope_keeps_a_low_precision_dtype():
    cos, sin = rope_tables(8, 4, 10000.0)
    x = torch.randn(1, 1, 8, 4, dtype=torch.bfloat16, requires_grad=True)
    out = apply_rope(x, cos, sin)
    out.sum().backward()
    assert out.dtype == x.grad.dtype == torch.bfloat16
