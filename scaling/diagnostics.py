"""Where FP8 quantization error comes from: statistics of one training step's GEMM inputs (every
`train.diagnostics_every` steps), in the record.

For each layer and each FP8 GEMM (attention qkv and out projections, the experts' gate|up and down, the shared
experts and dense FFNs) and each GEMM input kind (activation, weight, output gradient), the `Monitor` quantizes the
tensor as the run's FP8 recipe does (scaling/model/fp8.py: format, scaling granularity, power-of-2 scale) and
reports

- ``rel_error``: ||q(x) - x|| / ||x||, the relative error of the quantize-dequantize round trip;
- ``underflow``: the fraction of x's non-zero values that q(x) makes zero (below the format's smallest subnormal
  after scaling: the failure a large amax causes under tensorwise scaling);

and per layer the attention logit maximum, max over (query, earlier key) of q.k / sqrt(Dh) after QK-norm and RoPE:
without QK-norm it grows in training, and with it the gradients of the QKV projection, whose small values then
underflow (the QKV gradient underflow is also reported on its own). In a bf16 or fp32 run the same statistics say
what the FP8 recipe would do to that run's tensors.

The monitor is attached for one step (hooks on the linear layers, observers on the experts and attention) and adds a
few element-wise passes over each GEMM input of that step; the other steps pay nothing.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from scaling.model.fp8 import Fp8Recipe, quantize_dequantize

KINDS = ("activation", "weight", "grad_output")
LINEAR_GEMMS = {"attn.wqkv": "attn.qkv", "attn.wo": "attn.out", "ffn.w_gate_up": "ffn.gate_up",
                "ffn.w_down": "ffn.down", "ffn.shared.w_gate_up": "shared.gate_up", "ffn.shared.w_down": "shared.down"}
"""A block's FP8 linear layers (module path inside the block) and the GEMM name the diagnostics give them."""
QKV_GEMM = "attn.qkv"


@torch.no_grad()
def quantization_stats(x: torch.Tensor, fmt: str, dims: tuple[int, ...] | None) -> tuple[float, float]:
    """(relative error, underflow fraction) of x through `fmt` with scales over `dims` (None: one scale)."""
    x = x.detach().float()
    q = quantize_dequantize(x, fmt, dims)
    nonzero = x != 0
    n = int(nonzero.sum())
    underflow = float(((q == 0) & nonzero).sum()) / n if n else 0.0
    norm = float(x.norm())
    return (float((q - x).norm()) / norm if norm > 0 else 0.0), underflow


@torch.no_grad()
def causal_logit_max(q_BHTDh: torch.Tensor, k_BHTDh: torch.Tensor) -> float:
    """max over heads and (query t, key s <= t) of q.k / sqrt(Dh): the largest logit the softmax sees."""
    T, dh = q_BHTDh.shape[-2], q_BHTDh.shape[-1]
    logits_BHTT = (q_BHTDh.float() @ k_BHTDh.float().transpose(-1, -2)) / math.sqrt(dh)
    future_TT = torch.ones(T, T, dtype=torch.bool, device=logits_BHTT.device).triu(1)
    return float(logits_BHTT.masked_fill(future_TT, -math.inf).amax())


class Monitor:
    """The diagnostics of one step: `with Monitor(model, recipe) as monitor:` around its forward and backward, then
    `monitor.summary(step)`."""

    def __init__(self, model, recipe: Fp8Recipe):
        self.model, self.recipe = model, recipe
        self.rowwise = recipe.scaling == "rowwise"
        self.stats: dict[tuple[int, str, str], list[float]] = {}
        """(layer, gemm, kind) -> [sum of rel_error, sum of underflow, count] (micro-batches are averaged)."""
        self.logit_max: dict[int, float] = {}
        self._handles: list = []
        self._observed: list = []

    def _add(self, layer: int, gemm: str, kind: str, x: torch.Tensor) -> None:
        # activations and output gradients are scaled per row along the last dimension, weights per output channel
        # (dim 1 of a (out, in) linear weight and of an (E, D, F) expert weight alike: the reduction dimension)
        dims = ((1,) if kind == "weight" else (-1,)) if self.rowwise else None
        rel, under = quantization_stats(x, self.recipe.formats[kind], dims)
        acc = self.stats.setdefault((layer, gemm, kind), [0.0, 0.0, 0])
        acc[0] += rel
        acc[1] += under
        acc[2] += 1

    def _watch(self, layer: int, gemm: str, x: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> None:
        self._add(layer, gemm, "activation", x)
        self._add(layer, gemm, "weight", w)
        if y.requires_grad:
            y.register_hook(lambda g: self._add(layer, gemm, "grad_output", g))

    def __enter__(self) -> Monitor:
        for layer, block in enumerate(self.model.blocks):
            for path, gemm in LINEAR_GEMMS.items():
                module = _submodule(block, path)
                if isinstance(module, nn.Linear):
                    def hook(mod, inputs, output, layer=layer, gemm=gemm):
                        self._watch(layer, gemm, inputs[0], mod.weight, output)

                    self._handles.append(module.register_forward_hook(hook))
            if hasattr(block.ffn, "observer"):  # an MoE layer: its expert GEMMs
                block.ffn.observer = lambda gemm, x, w, y, layer=layer: self._watch(layer, gemm, x, w, y)
                self._observed.append(block.ffn)
            block.attn.observer = lambda q, k, layer=layer: self._logits(layer, q, k)
            self._observed.append(block.attn)
        return self

    def _logits(self, layer: int, q: torch.Tensor, k: torch.Tensor) -> None:
        self.logit_max[layer] = max(self.logit_max.get(layer, -math.inf), causal_logit_max(q, k))

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        for m in self._observed:
            m.observer = None
        self._handles, self._observed = [], []

    def summary(self, step: int) -> dict:
        """The record's entry for this step: every (layer, gemm, kind) statistic, the attention logit maximum and
        the QKV gradient underflow per layer."""
        formats = self.recipe.formats
        gemms = [{"layer": layer, "gemm": gemm, "kind": kind, "format": formats[kind],
                  "rel_error": acc[0] / acc[2], "underflow": acc[1] / acc[2]}
                 for (layer, gemm, kind), acc in sorted(self.stats.items(), key=_order)]
        n_layers = len(self.model.blocks)
        qkv = {g["layer"]: g["underflow"] for g in gemms if g["gemm"] == QKV_GEMM and g["kind"] == "grad_output"}
        return {"step": step, "scaling": self.recipe.scaling, "gemms": gemms,
                "attn_logit_max": [self.logit_max.get(i) for i in range(n_layers)],
                "qkv_grad_underflow": [qkv.get(i) for i in range(n_layers)]}


def _submodule(block, path: str):
    """The block's module at `path`, or None (a dense block has no experts, an MoE one no dense FFN)."""
    try:
        return block.get_submodule(path)
    except AttributeError:
        return None


def _order(item) -> tuple:
    (layer, gemm, kind), _ = item
    return layer, gemm, KINDS.index(kind)


def tracker_metrics(entry: dict) -> dict:
    """The W&B scalars of one diagnostics entry: per layer, the QKV gradient underflow and the logit maximum."""
    out = {}
    for i, (under, logit) in enumerate(zip(entry["qkv_grad_underflow"], entry["attn_logit_max"], strict=True)):
        if under is not None:
            out[f"fp8/qkv_grad_underflow/layer{i}"] = under
        if logit is not None:
            out[f"fp8/attn_logit_max/layer{i}"] = logit
    return out
