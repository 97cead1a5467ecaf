"""How much memory one device needs to train a run, and how the run is spread over its devices (ARCHITECTURE
section 7, "Memory and parallelism"). Pure Python, no torch: the planner, dry runs and `scaling fit` use it.

Per device, in bytes, with P parameters (flops.count: embedding and untied head included), N devices, b the
compute dtype's bytes (2 for bf16 on a GPU, 4 for fp32 on the CPU) and t the tokens of one micro-batch
(train.micro_batch_size rows x seq_len; a step's ceil(batch_size / N) rows per device go through in as many
micro-batches as it takes, gradients accumulated):

    states       16 P     (fp32 weights 4, gradients 4, AdamW's two moments 8)      single process and DDP
                 16 P / N (every tensor split over the N ranks)                      FSDP
    working set  b P (GPU only: the bf16 copies autocast keeps of every weight) + 4 P (DDP: our flat gradient
                 buffer for the all-reduce)                                          single process and DDP
                 b P_root + (2 b + b + 4) P_block (the gathered root, which stays gathered; the largest block
                 gathered, the next one prefetched, and its unsharded gradient in b and fp32) FSDP
    activations  t x a, with a the bytes saved for the backward pass per token (activation_bytes_per_token)

A run fits when the sum is at most USABLE_FRACTION of the device's memory (the rest: the CUDA context, NCCL
buffers, the allocator's fragmentation). The plan (plan_parallel) prefers a replica per device (DDP) with the
largest micro-batch that fits, then sharding (FSDP). The activation count was checked against what autograd
actually saves (tests/test_memory.py: within 5% over dense, MoE, shared-expert, GQA, dense-layer and vocabulary
variants on the CPU; measured within 1%). On a GPU it is unchecked until analysis/gpu_check.sh measures it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scaling.config import ModelConfig
from scaling.flops import _attention_params, _moe_params, _swiglu_params, count, d_ff_dense, d_shared, head_dim

STATE_BYTES_PER_PARAM = 16
"""fp32 master weights (4), fp32 gradients (4), AdamW exp_avg and exp_avg_sq (4 + 4)."""
USABLE_FRACTION = 0.9
"""Share of a device's memory a run may plan to use."""
PARALLEL_MODES = ("auto", "ddp", "fsdp", "pipeline")
GIB = 2 ** 30


def activation_bytes_per_token(m: ModelConfig, compute_bytes: int) -> float:
    """Bytes autograd keeps for the backward pass per token of a training batch (no activation checkpointing): the
    layers' (layer_activation_bytes_per_token) and the output's (output_activation_bytes_per_token)."""
    n_moe = m.n_layers - m.n_dense_layers
    return (m.n_dense_layers * layer_activation_bytes_per_token(m, compute_bytes, moe=False)
            + n_moe * layer_activation_bytes_per_token(m, compute_bytes, moe=True)
            + output_activation_bytes_per_token(m, compute_bytes))


def layer_activation_bytes_per_token(m: ModelConfig, compute_bytes: int, moe: bool) -> float:
    """Bytes one transformer layer keeps for the backward pass per token.

    In elements of the compute dtype: attention 2 d (its norm's input and output) + 3 d_attn (the q, k, v
    projection) + 2 d_attn (QK-norm outputs, when on) + 5 d_attn (rotated q, repeated k and v, the attention
    output and its reshape); the FFN's norm 2 d; a dense FFN of width f: 4 f; a routed MoE: top_k (2 d + 4 F) (the
    dispatched rows, their outputs, and the experts' gate/up and SwiGLU values) plus 4 d_shared x n_shared; in
    fp32: the router's 4 E (logits, scores, selection, combine) and, on a GPU, the fp32 copy of the top_k outputs
    combined (4 top_k d bytes)."""
    d, b = m.d_model, compute_bytes
    d_attn = m.n_heads * head_dim(m)
    attention = 2 * d + 3 * d_attn + (2 * d_attn if m.qk_norm else 0) + 5 * d_attn
    common = b * (attention + 2 * d)
    if not moe:
        return common + b * 4 * d_ff_dense(m)
    shared = 4 * m.n_shared_experts * d_shared(m)
    if m.n_experts > 1:
        fp32 = 4 * 4 * m.n_experts + (4 * m.top_k * d if b < 4 else 0)
        return common + b * (m.top_k * (2 * d + 4 * m.d_expert) + shared) + fp32
    return common + b * (4 * m.d_expert + shared)  # the dense baseline's single expert: no router, no dispatch


def output_activation_bytes_per_token(m: ModelConfig, compute_bytes: int) -> float:
    """Bytes kept once per token outside the layers: the embedding, final norm and head inputs 3 d, and the fp32
    log-softmax over the vocabulary (4 V bytes)."""
    return compute_bytes * 3 * m.d_model + 4 * m.vocab_size


def block_params(m: ModelConfig) -> int:
    """Parameters of the largest transformer block (what FSDP gathers at once)."""
    common = _attention_params(m) + 2 * m.d_model
    dense = _swiglu_params(m.d_model, d_ff_dense(m)) if m.n_dense_layers else 0
    moe = _moe_params(m, active=False) if m.n_layers > m.n_dense_layers else 0
    return common + max(dense, moe)


@dataclass(frozen=True)
class MemoryNeed:
    """Estimated peak bytes on one device, by kind (see the module docstring)."""

    states: float
    working: float
    activations: float

    @property
    def total(self) -> float:
        return self.states + self.working + self.activations


def need(m: ModelConfig, micro_batch: int, devices: int, parallel: str, on_gpu: bool) -> MemoryNeed:
    """The memory one of `devices` devices needs to train model `m` with `micro_batch` rows per forward/backward
    pass, under `parallel` ('ddp' also stands for a single process when devices = 1, 'fsdp')."""
    counts = count(m)
    P = counts.params_total
    b = 2 if on_gpu else 4
    tokens = micro_batch * m.seq_len
    activations = tokens * activation_bytes_per_token(m, b)
    if parallel == "fsdp" and devices > 1:
        root = counts.params_embedding + counts.params_head + m.d_model  # embedding, head, final norm
        working = b * root + (3 * b + 4) * block_params(m)
        return MemoryNeed(STATE_BYTES_PER_PARAM * P / devices, working, activations)
    working = (b * P if on_gpu else 0) + (4 * P if devices > 1 else 0)
    return MemoryNeed(STATE_BYTES_PER_PARAM * P, working, activations)


@dataclass(frozen=True)
class ParallelPlan:
    """How one run uses its devices, and whether it fits them."""

    parallel: str
    """'single' (one process), 'ddp' (a replica per device) or 'fsdp' (sharded)."""
    devices: int
    micro_batch: int
    """Rows per forward/backward pass on each device (gradients accumulated over a step's micro-batches)."""
    need: MemoryNeed
    capacity: float | None
    """Bytes of one device, or None when unknown (no verdict)."""
    min_devices: int | None = None
    """When it does not fit: the fewest devices that would hold it sharded, one row per micro-batch (None: no
    number of devices does)."""

    @property
    def fits(self) -> bool | None:
        return None if self.capacity is None else self.need.total <= USABLE_FRACTION * self.capacity

    def reason(self) -> str | None:
        """Why the run does not fit, with its numbers and the fix; None when it fits or nothing is known."""
        if self.fits is not False:
            return None
        n = self.need
        fix = (f"it needs at least {self.min_devices} devices, sharded (launcher.gpus_per_run or max_gpus_per_run, "
               f"nodes_per_run)"
               if self.min_devices else "no number of devices holds it: use a smaller model or sequence")
        return (f"needs {n.total / GIB:.1f} GiB per device under {self.parallel} on {self.devices} device(s) at "
                f"{self.micro_batch} row(s) per micro-batch (states {n.states / GIB:.1f}, working "
                f"{n.working / GIB:.1f}, activations {n.activations / GIB:.1f} GiB) but {USABLE_FRACTION:.0%} of "
                f"{self.capacity / GIB:.0f} GiB is usable: {fix}")

    def summary(self) -> str:
        """'41.2 GiB ddp x2 mb16', and '> 72: needs 8' when it does not fit."""
        text = f"{self.need.total / GIB:.3g} GiB {self.parallel}" + (f" x{self.devices}" if self.devices > 1 else "")
        text += f" mb{self.micro_batch}"
        if self.fits is False:
            text += f" > {USABLE_FRACTION * self.capacity / GIB:.0f}: " + (
                f"needs {self.min_devices}" if self.min_devices else "cannot fit")
        return text


def micro_batches(rows: int) -> list[int]:
    """Micro-batch sizes tried, largest first: all rows, then halvings (rounded up) down to 1."""
    sizes = [rows]
    while sizes[-1] > 1:
        sizes.append(math.ceil(sizes[-1] / 2))
    return sizes


def plan_parallel(m: ModelConfig, batch_size: int, devices: int, parallel: str, on_gpu: bool,
                  capacity: float | None, micro_batch: int | None = None) -> ParallelPlan:
    """The parallel plan of a run on `devices` devices of `capacity` bytes each.

    One device: a single process. Several: parallel='ddp' or 'fsdp' as asked; 'auto' takes a replica per device
    (DDP) when one fits, else shards (FSDP): the parameter states decide, since activations shrink with the
    micro-batch and states do not. The micro-batch is `micro_batch` when given, else the most rows (all of the
    device's share, then halvings) that fit; all rows when the capacity is unknown."""
    rows = math.ceil(batch_size / devices)
    modes = ["single"] if devices == 1 else ["ddp", "fsdp"] if parallel == "auto" else [parallel]
    sizes = [min(micro_batch, rows)] if micro_batch else micro_batches(rows)

    def plan(mode: str, micro: int) -> ParallelPlan:
        return ParallelPlan(mode, devices, micro, need(m, micro, 1 if mode == "single" else devices, mode, on_gpu),
                            capacity)

    if capacity is None:
        return plan(modes[0], sizes[0])
    for mode in modes:
        for micro in sizes:
            if (candidate := plan(mode, micro)).fits:
                return candidate
    last = plan(modes[-1], sizes[-1])
    return ParallelPlan(last.parallel, devices, last.micro_batch, last.need, capacity,
                        min_devices=fewest_devices(m, on_gpu, capacity))


def fewest_devices(m: ModelConfig, on_gpu: bool, capacity: float, most: int = 4096) -> int | None:
    """The fewest devices (powers of two up to `most`) that hold the model under FSDP at one row per
    micro-batch."""
    n = 1
    while n <= most:
        if need(m, 1, n, "ddp" if n == 1 else "fsdp", on_gpu).total <= USABLE_FRACTION * capacity:
            return n
        n *= 2
    return None
