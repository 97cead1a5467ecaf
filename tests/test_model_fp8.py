"""FP8 numerics (scaling/model/fp8.py) against references written here from the formats' definitions: rounding of
E4M3 / E5M2 by hand, and a model whose every quantized GEMM is rebuilt from that rounding."""

import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scaling.config import ModelConfig
from scaling.model import build_model, fp8
from scaling.model import moe as moe_mod

logging.getLogger("torchao").setLevel(logging.ERROR)

# (mantissa bits, smallest normal exponent, largest finite value) of the OCP FP8 formats (E4M3 without infinities)
FORMAT_BITS = {"e4m3": (3, -6, 448.0), "e5m2": (2, -14, 57344.0)}


def round_to_format(v: np.ndarray, fmt: str) -> np.ndarray:
    """Round-to-nearest-even of float64 values (already within +-max) onto the format's grid, subnormals included."""
    mant, emin, top = FORMAT_BITS[fmt]
    a = np.abs(v)
    with np.errstate(divide="ignore"):
        e = np.where(a > 0, np.floor(np.log2(np.where(a > 0, a, 1.0))), emin)
    quantum = np.exp2(np.maximum(e, emin) - mant)
    return np.clip(np.round(v / quantum) * quantum, -top, top)  # np.round: half to even


def reference_qdq(x: torch.Tensor, fmt: str, dims=None) -> torch.Tensor:
    """Quantize-dequantize from the definitions: a power-of-2 scale of max / amax (rounded down; per slice over
    `dims`), saturate, round onto the format's grid, divide by the scale again."""
    v = x.detach().double().numpy()
    amax = np.abs(v).max() if dims is None else np.abs(v).max(axis=dims, keepdims=True)
    ratio = np.float32(FORMAT_BITS[fmt][2] / np.maximum(amax, 1e-12))  # max / amax in fp32, as torchao has it
    _, exponent = np.frexp(ratio)  # ratio = m 2^exponent, m in [0.5, 1): floor(log2 ratio) = exponent - 1
    scale = np.exp2(exponent - 1.0)
    top = FORMAT_BITS[fmt][2]
    scaled = np.clip((v * scale).astype(np.float32).astype(np.float64), -top, top)
    return torch.from_numpy((round_to_format(scaled, fmt) / scale).astype(np.float32))


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
def test_quantize_dequantize_is_the_formats_rounding_exactly(fmt):
    g = torch.Generator().manual_seed(0)
    # magnitudes over 30 binades, so that scaled values land among the normals, the subnormals and below them
    x = torch.randn(4096, generator=g) * torch.exp2(torch.randint(-30, 4, (4096,), generator=g).float())
    x[:7] = 0.0
    ours = fp8.quantize_dequantize(x, fmt)
    assert torch.equal(ours, reference_qdq(x, fmt))
    mant, emin, _ = FORMAT_BITS[fmt]
    scale = fp8.scale_of(x, fmt, None)
    assert math.log2(float(scale)).is_integer() and float(x.abs().max() * scale) <= FORMAT_BITS[fmt][2]
    tiny = x.abs() * scale < 2.0 ** (emin - mant - 1)  # below half the smallest subnormal: rounds to zero
    assert tiny.any() and (ours[tiny] == 0).all()


def test_rowwise_scales_each_row_on_its_own():
    x = torch.tensor([[1e4, 1e-3, 2e-3], [1e-3, 2e-3, 3e-3]])
    per_tensor = fp8.quantize_dequantize(x, "e4m3")
    per_row = fp8.quantize_dequantize(x, "e4m3", (1,))
    assert (per_tensor[1] == 0).all()  # the large value of row 0 pushed row 1 below E4M3's subnormals
    assert torch.allclose(per_row[1], x[1], rtol=0.07)  # its own scale keeps it (3 mantissa bits: <= 6.25%)
    assert torch.equal(per_row, reference_qdq(x, "e4m3", dims=(1,)))


class ReferenceLinear(torch.nn.Module):
    """x @ w.T with both through reference_qdq, as a 2-D GEMM (the shape torchao's GEMM has)."""

    def __init__(self, weight, rowwise: bool):
        super().__init__()
        self.weight, self.rowwise = weight, rowwise

    def forward(self, x):
        xq = reference_qdq(x.reshape(-1, x.shape[-1]), "e4m3", (1,) if self.rowwise else None)
        wq = reference_qdq(self.weight, "e4m3", (1,) if self.rowwise else None)
        return torch.mm(xq, wq.t()).reshape(*x.shape[:-1], -1)


def reference_model(model, rowwise: bool, monkeypatch):
    """The fp32 model with its attention, shared-expert and dense-FFN linears and its expert GEMMs through
    reference_qdq (the router and head as they are)."""
    for block in model.blocks:
        block.attn.wqkv = ReferenceLinear(block.attn.wqkv.weight, rowwise)
        block.attn.wo = ReferenceLinear(block.attn.wo.weight, rowwise)
        if block.ffn.shared is not None:
            block.ffn.shared.w_gate_up = ReferenceLinear(block.ffn.shared.w_gate_up.weight, rowwise)
            block.ffn.shared.w_down = ReferenceLinear(block.ffn.shared.w_down.weight, rowwise)

    def grouped(x_ND, w_EDF, counts_E, offs_E, use_grouped_mm):
        xq = reference_qdq(x_ND, "e4m3", (1,) if rowwise else None)
        wq = reference_qdq(w_EDF, "e4m3", (1,) if rowwise else None)
        return torch.cat([xs @ w for xs, w in zip(xq.split(counts_E.tolist()), wq.unbind(0), strict=True)])

    monkeypatch.setattr(moe_mod, "grouped_matmul", grouped)
    return model


@pytest.mark.parametrize("scaling", ["tensorwise", "rowwise"])
@pytest.mark.parametrize("shared", [0, 1])
def test_emulated_fp8_forward_matches_a_quantize_dequantize_reference_exactly(scaling, shared, monkeypatch):
    cfg = ModelConfig(d_model=64, n_layers=2, n_heads=4, seq_len=32, n_experts=4, top_k=2, d_expert=32,
                      n_shared_experts=shared, dispatch="slices")
    torch.manual_seed(0)
    converted = build_model(cfg)
    plain = build_model(cfg)
    plain.load_state_dict(converted.state_dict())
    info = fp8.convert(converted, fp8.Fp8Recipe(scaling), emulate=True)
    assert info["linear_layers"] == 2 * (2 + 2 * shared)  # qkv, out (+ the shared expert's two) per block
    x = torch.randint(0, 256, (3, 32))
    with torch.no_grad():
        logits = converted(x)
        expected = reference_model(plain, scaling == "rowwise", monkeypatch)(x)
    assert torch.equal(logits, expected)
    unquantized = build_model(cfg)
    unquantized.load_state_dict(converted.state_dict())
    with torch.no_grad():
        assert (logits - unquantized(x)).abs().max() > 1e-3  # and FP8 does change the numbers


def test_the_expert_gemm_backward_quantizes_the_gradient_to_e5m2_under_tensorwise_scaling():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(10, 16, generator=g, requires_grad=True)
    w = torch.randn(2, 16, 8, generator=g, requires_grad=True)
    counts = torch.tensor([4, 6])

    def slices(x, w, counts, offs):
        return torch.cat([xs @ we for xs, we in zip(x.split(counts.tolist()), w.unbind(0), strict=True)])

    y = fp8.Fp8GroupedMatmul.apply(x, w, counts, counts.cumsum(0).int(), slices, "tensorwise")
    grad_y = torch.randn(10, 8, generator=g) * torch.exp2(torch.randint(-20, 2, (10, 8), generator=g).float())
    y.backward(grad_y)
    gq, xq, wq = reference_qdq(grad_y, "e5m2"), reference_qdq(x, "e4m3"), reference_qdq(w, "e4m3")
    assert torch.equal(x.grad, slices(gq, wq.transpose(1, 2), counts, None))
    expected_w = torch.stack([xs.t() @ gs for xs, gs in zip(xq.split([4, 6]), gq.split([4, 6]), strict=True)])
    assert torch.allclose(w.grad, expected_w, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("scaling", ["tensorwise", "rowwise"])
def test_fp8_training_step_runs_under_bf16_autocast_on_the_cpu(scaling):
    cfg = ModelConfig(d_model=32, n_layers=1, n_heads=2, seq_len=16, n_experts=4, top_k=2, d_expert=32)
    torch.manual_seed(0)
    model = build_model(cfg)
    fp8.convert(model, fp8.Fp8Recipe(scaling), emulate=True)
    x = torch.randint(0, 256, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
    F.cross_entropy(logits.float().flatten(0, 1), x.flatten()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.blocks[0].ffn.w_gate_up_EDF.grad.abs().sum() > 0
