"""What each pipeline unit of a model costs: the embedding (E), each decoder layer (t, dense or MoE), each MTP block
(m) and the output head with its loss (L), in forward and backward FLOPs per token, parameters and the bytes each
keeps for the backward pass per token. The formulas are flops.py's and memory.py's (one home each); this module
only cuts the model into units.

A unit's *cost* is its time in GEMM-equivalent FLOPs: its matmul FLOPs, plus, for work that is not a matmul (the
embedding's gather and scatter-add, the loss's softmax over the vocabulary), the bytes it moves times
FLOPS_PER_BYTE (a GPU's peak FLOP/s over its memory bandwidth: H100 989 TFLOP/s / 3.35 TB/s). Measured seconds per
unit (probe_unit_seconds) replace the estimate where given.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from scaling.config import ModelConfig
from scaling.flops import _swiglu_params, head_forward_flops, layer_forward_flops, layer_params
from scaling.memory import layer_activation_bytes_per_token, output_activation_bytes_per_token

FLOPS_PER_BYTE = 989e12 / 3.35e12
"""GEMM-equivalent FLOPs per byte a memory-bound kernel moves (an H100's bf16 peak over its HBM bandwidth)."""
LOSS_BYTES_PER_LOGIT = 16
"""Bytes the cross-entropy moves per logit over forward and backward: the fp32 log-softmax written and read
(4 + 4), its gradient written and read (4 + 4)."""


@dataclass(frozen=True)
class Unit:
    """One pipeline unit: what a stage holds whole."""

    kind: str
    """E, t, m or L (Megatron-Core's layout letters)."""
    name: str
    """e.g. 'layer 3 (MoE)'."""
    fqns: tuple[str, ...]
    """Its modules' names in a torchtitan-style model (tok_embeddings, layers.3, norm + output; mtp.0)."""
    forward: float
    """Forward cost per token, GEMM-equivalent FLOPs."""
    backward: float
    """Backward cost per token (2x the matmuls' forward)."""
    params: int
    """Parameters it holds (all experts of an MoE layer)."""
    expert_params: int
    """Of which routed experts (divided over expert-parallel ranks)."""
    activation_bytes: float
    """Bytes kept for the backward pass per token (compute dtype as memory.py counts it)."""

    @property
    def cost(self) -> float:
        return self.forward + self.backward


def pipeline_units(m: ModelConfig, mtp_layers: int = 0, compute_bytes: int = 2) -> list[Unit]:
    """The model's units in order: E, the n_dense_layers dense then the MoE decoder layers, `mtp_layers` MTP blocks
    (DeepSeek-V3's: two norms, a 2d -> d projection, one MoE layer and the shared head with its loss), then L."""
    d, V, b = m.d_model, m.vocab_size, compute_bytes
    head_params = 0 if m.tie_embeddings else V * d
    gather = 2 * d * b * FLOPS_PER_BYTE  # read a row forward, scatter-add its gradient backward
    units = [Unit("E", "embedding", ("tok_embeddings",), gather / 2, gather / 2, V * d, 0, float(b * d))]
    routed = m.n_experts * _swiglu_params(d, m.d_expert) if m.n_experts > 1 else 0
    for i in range(m.n_layers):
        moe = i >= m.n_dense_layers
        f = layer_forward_flops(m, moe)
        units.append(Unit("t", f"layer {i} ({'MoE' if moe else 'dense'})", (f"layers.{i}",), f, 2 * f,
                          layer_params(m, moe), routed if moe else 0,
                          layer_activation_bytes_per_token(m, b, moe)))
    loss = LOSS_BYTES_PER_LOGIT * V * FLOPS_PER_BYTE
    head = head_forward_flops(m)
    for i in range(mtp_layers):
        f = layer_forward_flops(m, True) + 2 * (2 * d * d) + head
        units.append(Unit("m", f"MTP {i}", (f"mtp.{i}",), f + loss / 2, 2 * f + loss / 2,
                          layer_params(m, True) + 2 * d * d + 2 * d, routed,
                          layer_activation_bytes_per_token(m, b, True) + output_activation_bytes_per_token(m, b)))
    units.append(Unit("L", "head + loss", ("norm", "output"), head + loss / 2, 2 * head + loss / 2,
                      head_params + d, 0, output_activation_bytes_per_token(m, b) - b * d))
    return units


def with_measured(units: list[Unit], seconds: dict[str, tuple[float, float]], flops_per_s: float) -> list[Unit]:
    """The units with their costs replaced by measured (forward, backward) seconds per token of each unit name,
    turned into GEMM-equivalent FLOPs at `flops_per_s` so that measured and estimated units compare."""
    return [replace(u, forward=seconds[u.name][0] * flops_per_s, backward=seconds[u.name][1] * flops_per_s)
            if u.name in seconds else u for u in units]

