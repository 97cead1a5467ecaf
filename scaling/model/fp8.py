"""FP8 training numerics: how a GEMM operand is quantized, the expert GEMMs in FP8, and the model's conversion.

The recipe (Ling 2.0, torchao's float8 training): the inputs of every linear layer's GEMMs go to FP8, everything
else stays in the run's base precision (bf16). Forward: activations and weights in E4M3 (max 448, 3 mantissa
bits); backward: the output gradient in E5M2 (max 57344, 2 mantissa bits) under tensorwise scaling, E4M3 under
rowwise. A dynamic scale maps each operand's absolute maximum (amax) onto the format's largest value,
`scale = fp8_max / amax`, rounded down to a power of two (so a dequantized value is exact in bf16, and the same on a
GPU and in this emulation), and the operand is `q = saturate(x * scale)` in FP8, read back as `q / scale`:

- ``tensorwise``: one scale per operand (per GEMM input: the whole activation, the whole weight);
- ``rowwise``: one scale per row along the GEMM's reduction dimension (per token of an activation, per output
  channel of a weight; the backward GEMMs quantize again along their own reduction dimension).

A value below the format's smallest subnormal after scaling (E4M3: 2^-9, E5M2: 2^-16) rounds to zero: with
tensorwise scaling one large value (a large attention gradient, without QK-norm) pushes every small value of the
same tensor towards that edge, which is the failure scaling/diagnostics.py measures.

Linear layers go through torchao (`convert_to_float8_training`: real FP8 GEMMs on Hopper, `emulate=True`
elsewhere: the same casts, the GEMM in fp32). The routed experts' grouped GEMMs are quantized here the same way
(`Fp8GroupedMatmul`: quantize-dequantize of both operands, then the base precision's grouped matmul), so their
numerics are FP8's on every device and their speed is the base precision's. The router (fp32 logits) and the
output head stay in the base precision.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

FORMATS = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}
AMAX_FLOOR = 1e-12
"""An all-zero operand gets the scale of this amax (as torchao): it stays zero."""


@dataclass(frozen=True)
class Fp8Recipe:
    """Formats and scaling granularity of the three GEMM inputs."""

    scaling: str = "tensorwise"
    """'tensorwise' (one scale per operand) or 'rowwise' (one per row along the reduction dimension)."""

    @property
    def formats(self) -> dict[str, str]:
        """Format of each GEMM input kind: activation, weight, grad_output."""
        grad = "e5m2" if self.scaling == "tensorwise" else "e4m3"
        return {"activation": "e4m3", "weight": "e4m3", "grad_output": grad}

    def describe(self) -> str:
        f = self.formats
        return (f"{self.scaling} scaling, power-of-2 scales; activations and weights {f['activation']}, "
                f"output gradients {f['grad_output']}")


def fp8_max(fmt: str) -> float:
    return float(torch.finfo(FORMATS[fmt]).max)


def scale_of(x: torch.Tensor, fmt: str, dims: tuple[int, ...] | None) -> torch.Tensor:
    """The power-of-2 scale of x in `fmt`: one for the whole tensor (dims None), or one per slice reduced over
    `dims` (kept as size-1 dimensions, so it broadcasts against x). fp32."""
    amax = x.detach().abs().amax() if dims is None else x.detach().abs().amax(dim=dims, keepdim=True)
    return _scale_for(amax, fmt)


def _scale_for(amax: torch.Tensor, fmt: str) -> torch.Tensor:
    """fp8_max / amax (in fp64, then fp32, as torchao), rounded down to a power of two."""
    scale = (fp8_max(fmt) / amax.double().clamp(min=AMAX_FLOOR)).float()
    return torch.exp2(torch.floor(torch.log2(scale)))


def quantize_dequantize(x: torch.Tensor, fmt: str, dims: tuple[int, ...] | None = None,
                        scale: torch.Tensor | None = None) -> torch.Tensor:
    """x through FP8 and back (fp32): saturate(x * scale) cast to `fmt`, divided by the scale again."""
    s = scale_of(x, fmt, dims) if scale is None else scale
    top = fp8_max(fmt)
    q = (x.float() * s).clamp(-top, top).to(FORMATS[fmt])
    return q.float() / s


def _segment_scale(x_ND: torch.Tensor, counts_E: torch.Tensor, fmt: str) -> torch.Tensor:
    """Per (expert group of rows, column) scales of a row-sorted operand, expanded back to (N, D): the scales of the
    weight-gradient GEMM, which reduces over each group's rows."""
    lengths = counts_E.to(x_ND.device)
    amax_ED = torch.segment_reduce(x_ND.detach().abs().float(), "max", lengths=lengths, axis=0, unsafe=True)
    amax_ED = torch.nan_to_num(amax_ED, nan=0.0, neginf=0.0)  # an empty group
    return _scale_for(amax_ED, fmt).repeat_interleave(lengths, dim=0)


class Fp8GroupedMatmul(torch.autograd.Function):
    """y_NF = x_ND @ w_EDF[expert of each row] with both operands through FP8 (rows sorted by expert, counts_E of
    each): the forward GEMM and the two backward GEMMs each quantize their inputs as the recipe says, then run
    `matmul` (grouped_matmul's grouped GEMM or slices) on the dequantized values, in x's dtype on a GPU and in fp32
    on the CPU (the same numbers: a dequantized FP8 value is exact in bf16, and a GPU's bf16 GEMM accumulates in
    fp32), and return y in x's dtype."""

    @staticmethod
    def forward(ctx, x_ND, w_EDF, counts_E, offs_E, matmul, scaling):
        fmt = Fp8Recipe(scaling).formats
        rowwise = scaling == "rowwise"
        gemm = torch.float32 if x_ND.device.type == "cpu" else x_ND.dtype
        xq_ND = quantize_dequantize(x_ND, fmt["activation"], (1,) if rowwise else None).to(gemm)
        wq_EDF = quantize_dequantize(w_EDF, fmt["weight"], (1,) if rowwise else None).to(gemm)
        ctx.matmul, ctx.scaling, ctx.gemm = matmul, scaling, gemm
        ctx.dtypes = x_ND.dtype, w_EDF.dtype
        if rowwise:
            ctx.save_for_backward(x_ND, w_EDF, counts_E, offs_E)
        else:  # tensorwise: the forward's FP8 operands serve the backward GEMMs too (as torchao)
            ctx.save_for_backward(xq_ND, wq_EDF, counts_E, offs_E)
        return matmul(xq_ND, wq_EDF, counts_E, offs_E).to(x_ND.dtype)

    @staticmethod
    def backward(ctx, grad_NF):
        x_ND, w_EDF, counts_E, offs_E = ctx.saved_tensors
        fmt, gemm, mm = Fp8Recipe(ctx.scaling).formats, ctx.gemm, ctx.matmul
        grad_NF = grad_NF.contiguous()
        if ctx.scaling == "rowwise":
            g_in = quantize_dequantize(grad_NF, fmt["grad_output"], (1,))  # grad_x reduces over F
            w_in = quantize_dequantize(w_EDF, fmt["weight"], (2,))
            g_w = quantize_dequantize(grad_NF, fmt["grad_output"], scale=_segment_scale(grad_NF, counts_E,
                                                                                        fmt["grad_output"]))
            x_w = quantize_dequantize(x_ND, fmt["activation"], scale=_segment_scale(x_ND, counts_E,
                                                                                    fmt["activation"]))
        else:
            g_in = g_w = quantize_dequantize(grad_NF, fmt["grad_output"])
            w_in, x_w = w_EDF, x_ND
        grad_x_ND = mm(g_in.to(gemm), w_in.to(gemm).transpose(1, 2), counts_E, offs_E)
        grad_w_EDF = _grouped_weight_grad(x_w.to(gemm), g_w.to(gemm), counts_E)
        x_dtype, w_dtype = ctx.dtypes
        return grad_x_ND.to(x_dtype), grad_w_EDF.to(w_dtype), None, None, None, None


if hasattr(torch, "_grouped_mm"):
    # a custom op, as moe.py's grouped GEMM: torch.compile traces it as one node (the built-in fake kernel of
    # torch._grouped_mm accepts only bf16)
    @torch.library.custom_op("scaling::grouped_weight_grad", mutates_args=())
    def _grouped_weight_grad_op(x_ND: torch.Tensor, g_NF: torch.Tensor, offs_E: torch.Tensor) -> torch.Tensor:
        return torch._grouped_mm(x_ND.t(), g_NF, offs=offs_E)

    @_grouped_weight_grad_op.register_fake
    def _(x_ND, g_NF, offs_E):
        return x_ND.new_empty(offs_E.shape[0], x_ND.shape[1], g_NF.shape[1])


def _grouped_weight_grad(x_ND: torch.Tensor, g_NF: torch.Tensor, counts_E: torch.Tensor) -> torch.Tensor:
    """Per expert e: x_e^T @ g_e over its rows (E, D, F)."""
    if hasattr(torch, "_grouped_mm") and x_ND.shape[1] % 8 == 0 and g_NF.shape[1] % 8 == 0:
        return _grouped_weight_grad_op(x_ND, g_NF, counts_E.cumsum(0).to(torch.int32))
    rows = counts_E.tolist()
    return torch.stack([xs.t() @ gs for xs, gs in zip(x_ND.split(rows), g_NF.split(rows), strict=True)])


def fp8_matmul(x_TD: torch.Tensor, w_DF: torch.Tensor, scaling: str) -> torch.Tensor:
    """x @ w for one weight (the dense baseline's single expert), through FP8 as the grouped GEMM is."""
    counts_E = torch.tensor([x_TD.shape[0]], device=x_TD.device)

    def matmul(x, w, counts, offs):
        return x @ w[0]

    return Fp8GroupedMatmul.apply(x_TD, w_DF.unsqueeze(0), counts_E, counts_E.to(torch.int32), matmul, scaling)


# ---- the model's conversion --------------------------------------------------------------------------------------
def quantized_linear(fqn: str) -> bool:
    """Which linear layers train in FP8: every one but the output head and the routers (fp32 logits)."""
    return fqn != "head" and not fqn.endswith("router")


def convert(model, recipe: Fp8Recipe, emulate: bool) -> dict:
    """Put the model's GEMMs in FP8 (in place): linear layers through torchao (emulated or real), the routed
    experts through Fp8GroupedMatmul. Returns what the record says about it."""
    import dataclasses

    from torchao.float8 import Float8LinearConfig, convert_to_float8_training

    if recipe.scaling == "rowwise":  # torchao's recipe has power-of-2 scales already
        config = dataclasses.replace(Float8LinearConfig.from_recipe_name("rowwise"), emulate=emulate)
    else:
        config = Float8LinearConfig(emulate=emulate, round_scales_to_power_of_2=True)
    converted = []

    def keep(module, fqn: str) -> bool:
        ok = quantized_linear(fqn)
        if ok:
            converted.append(fqn)
        return ok

    convert_to_float8_training(model, config=config, module_filter_fn=keep)
    for m in model.moe_layers:
        m.fp8_scaling = recipe.scaling
    return {"recipe": recipe.describe(), "linear": "torchao float8 (emulated)" if emulate else "torchao float8",
            "linear_layers": len(converted),
            "experts": "fp8 quantize-dequantize, grouped GEMM in the base precision" if model.moe_layers else None}
