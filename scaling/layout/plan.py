"""`plan_layout`: a run's model laid out on a cluster's pipeline, the engines' even split against the balanced one,
each simulated (what `scaling layout` prints and `--json` writes).

Per rank memory: its units' parameters at STATE_BYTES_PER_PARAM (fp32 weights, gradients, AdamW's moments) plus
the bf16 copy a GPU computes with, the routed experts' divided over the expert-parallel ranks (--ep); with a
distributed optimizer (the default, Megatron's --use-distributed-optimizer, ZeRO-1) the fp32 weights and moments
(12 bytes) are divided over the data-parallel ranks that hold a copy (dp, dp / ep for experts); plus the
activations the schedule keeps at its peak (schedule.py), against USABLE_FRACTION of the GPU's memory. While
splitting, a stage's activations are bounded by the micro-batches 1F1B keeps on it (P - rank; interleaved: the
warm-up's share per chunk) and an interleaved rank's memory shared equally by its chunks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from scaling.config import ModelConfig
from scaling.layout import engines
from scaling.layout.schedule import Simulation, simulate, warmup_forwards
from scaling.layout.split import Split, balanced_split, even_split
from scaling.layout.units import Unit, pipeline_units
from scaling.memory import GIB, STATE_BYTES_PER_PARAM, USABLE_FRACTION

COMPUTE_BYTES = 2
"""bf16: the bytes of an activation element and of the weight copy a GPU computes with."""
PP_CHOICES = (1, 2, 4, 8, 16, 32, 64)


class LayoutError(ValueError):
    """A layout that cannot be made (the message says why and what to change)."""


@dataclass(frozen=True)
class Cluster:
    """The cluster and pipeline options of `scaling layout` (its flags, one to one)."""

    gpus: int | None = None
    """GPUs of the run; None = one pipeline (data parallel 1)."""
    gpus_per_node: int = 8
    """GPUs per node (a pipeline longer than a node crosses nodes)."""
    memory_per_gpu_gb: float = 80.0
    """Memory of one GPU, GiB."""
    pp: int | None = None
    """Pipeline stages (ranks); None = the fewest of 1, 2, 4, ... whose balanced split fits memory."""
    vpp: int = 1
    """Virtual stages per rank (interleaved 1F1B when > 1)."""
    ep: int = 1
    """Expert-parallel ranks the routed experts are divided over."""
    microbatches: int | None = None
    """Micro-batches per step; None = the run's batch over data-parallel ranks and micro-batch rows."""
    microbatch_rows: int = 1
    """Sequences per micro-batch."""
    recompute: bool = False
    """Full activation recomputation: a decoder layer or MTP block keeps only its input (d_model per token) and
    runs its forward again in the backward pass."""
    distributed_optimizer: bool = True
    """Optimizer states (fp32 weights and moments) sharded over data-parallel ranks (ZeRO-1)."""
    mtp_layers: int = 0
    """Multi-token-prediction blocks after the decoder layers (DeepSeek-V3, Ling 2.0: 1)."""
    flops_per_s: float = 989e12 * 0.35
    """Sustained GEMM FLOP/s of one GPU (default: an H100's bf16 peak at 35% MFU), for seconds."""
    latency_s: float = 0.0
    """Seconds per hop between stages (communication; 0 = not modelled)."""


@dataclass
class Pipeline:
    """One split and its simulation."""

    split: Split
    simulation: Simulation
    forward_s: list[float]
    backward_s: list[float]
    param_bytes_per_rank: list[float]
    memory_bytes_per_rank: list[float]


@dataclass
class LayoutPlan:
    model: ModelConfig
    cluster: Cluster
    units: list[Unit]
    pp: int
    vpp: int
    dp: int
    microbatches: int
    even: Pipeline
    balanced: Pipeline
    notes: list[str] = field(default_factory=list)

    @property
    def capacity_bytes(self) -> float:
        return USABLE_FRACTION * self.cluster.memory_per_gpu_gb * GIB

    def megatron_layout(self) -> str:
        return engines.megatron_layout(self.balanced.split, self.units)

    def megatron_flags(self) -> list[str]:
        return engines.megatron_flags(self.balanced.split, self.units)

    def torchtitan_fields(self) -> dict:
        return engines.torchtitan_fields(self.balanced.split, self.units, self.cluster.microbatch_rows)

    def to_json(self) -> dict:
        def pipeline(p: Pipeline) -> dict:
            stages = []
            for k, stage in enumerate(p.split.stages):
                stages.append({"stage": k, "rank": k % self.pp, "chunk": k // self.pp,
                               "units": [self.units[i].name for i in stage],
                               "letters": "".join(self.units[i].kind for i in stage),
                               "cost_flops_per_token": sum(self.units[i].cost for i in stage),
                               "forward_s": p.forward_s[k], "backward_s": p.backward_s[k]})
            s = p.simulation
            return {"stages": stages, "step_s": s.step_s, "bubble": s.bubble,
                    "memory_gib_per_rank": [b / GIB for b in p.memory_bytes_per_rank],
                    "params_gib_per_rank": [b / GIB for b in p.param_bytes_per_rank],
                    "peak_in_flight_per_rank": list(s.in_flight),
                    "megatron_layout": engines.megatron_layout(p.split, self.units)}

        return {"pp": self.pp, "vpp": self.vpp, "dp": self.dp, "ep": self.cluster.ep,
                "microbatches": self.microbatches, "microbatch_rows": self.cluster.microbatch_rows,
                "memory_per_gpu_gb": self.cluster.memory_per_gpu_gb, "flops_per_s": self.cluster.flops_per_s,
                "units": [{"name": u.name, "kind": u.kind, "cost_flops_per_token": u.cost, "params": u.params}
                          for u in self.units],
                "even": pipeline(self.even), "balanced": pipeline(self.balanced),
                "speedup": self.even.simulation.step_s / self.balanced.simulation.step_s,
                "megatron": {"layout": self.megatron_layout(), "flags": self.megatron_flags()},
                "torchtitan": self.torchtitan_fields(), "notes": self.notes}


OPTIMIZER_BYTES = 12
"""Of STATE_BYTES_PER_PARAM, what a distributed optimizer shards: fp32 weights and AdamW's two moments."""


def _unit_param_bytes(u: Unit, ep: int, dp: int = 1, distributed_optimizer: bool = False) -> float:
    """Bytes a rank holds for unit `u`'s parameters: states and the compute copy; routed experts over `ep` ranks;
    with a distributed optimizer the optimizer's share over the data-parallel copies (dp; dp / ep for experts)."""
    def per_param(copies: float) -> float:
        sharded = OPTIMIZER_BYTES / copies if distributed_optimizer else OPTIMIZER_BYTES
        return STATE_BYTES_PER_PARAM - OPTIMIZER_BYTES + sharded + COMPUTE_BYTES

    dense = u.params - u.expert_params
    return dense * per_param(dp) + u.expert_params / ep * per_param(max(1.0, dp / ep))


def _in_flight_bound(stage: int, pp: int, vpp: int, microbatches: int) -> int:
    """The micro-batches a stage keeps at most: its rank's warm-up + 1 (capped by all it runs), shared by the
    rank's chunks."""
    held = min(microbatches * vpp, warmup_forwards(stage % pp, pp, vpp, microbatches) + 1)
    return math.ceil(held / vpp)


def _pipeline(units: list[Unit], split: Split, cluster: Cluster, microbatches: int, tokens: int,
              dp: int) -> Pipeline:
    """The split simulated: seconds per stage pass of a micro-batch of `tokens`, memory per rank."""
    fwd = [sum(units[i].forward for i in s) * tokens / cluster.flops_per_s for s in split.stages]
    bwd = [sum(units[i].backward for i in s) * tokens / cluster.flops_per_s for s in split.stages]
    act = [sum(units[i].activation_bytes for i in s) * tokens for s in split.stages]
    sim = simulate(fwd, bwd, act, split.pp, microbatches, cluster.latency_s)
    params = [0.0] * split.pp
    for k, stage in enumerate(split.stages):
        params[k % split.pp] += sum(_unit_param_bytes(units[i], cluster.ep, dp, cluster.distributed_optimizer)
                                    for i in stage)
    memory = [p + a for p, a in zip(params, sim.peak_activation_bytes, strict=True)]
    return Pipeline(split, sim, fwd, bwd, params, memory)


def _stage_fits(units: list[Unit], tokens: int, pp: int, vpp: int, microbatches: int, cluster: Cluster, dp: int,
                capacity: float):
    """fits(stage, first, end) for balanced_split: the units' parameter bytes and their activations times the
    micro-batches the stage keeps (_in_flight_bound) within the rank's memory (an interleaved rank's shared
    equally by its chunks)."""
    params, acts = [0.0], [0.0]
    for u in units:
        params.append(params[-1] + _unit_param_bytes(u, cluster.ep, dp, cluster.distributed_optimizer))
        acts.append(acts[-1] + u.activation_bytes * tokens)
    bounds = [_in_flight_bound(k, pp, vpp, microbatches) for k in range(pp * vpp)]

    def fits(k: int, i: int, j: int) -> bool:
        return params[j] - params[i] + bounds[k] * (acts[j] - acts[i]) <= capacity / vpp

    return fits


def recomputed(u: Unit, d_model: int) -> Unit:
    """A decoder layer or MTP block under full recomputation: it keeps its input only and pays its forward twice."""
    if u.kind not in ("t", "m"):
        return u
    return replace(u, backward=u.backward + u.forward, activation_bytes=COMPUTE_BYTES * d_model)


def plan_layout(model: ModelConfig, batch_rows: int, cluster: Cluster) -> LayoutPlan:
    """Lay `model`, trained on batches of `batch_rows` sequences, out on `cluster`: the even and the balanced
    split over its pipeline, each simulated. LayoutError when it cannot be laid out as asked."""
    units = pipeline_units(model, cluster.mtp_layers, COMPUTE_BYTES)
    if cluster.recompute:
        units = [recomputed(u, model.d_model) for u in units]
    capacity = USABLE_FRACTION * cluster.memory_per_gpu_gb * GIB
    tokens = cluster.microbatch_rows * model.seq_len
    if cluster.vpp < 1 or cluster.ep < 1 or cluster.microbatch_rows < 1:
        raise LayoutError("--vpp, --ep and --microbatch-rows must be at least 1")
    choices = [cluster.pp] if cluster.pp else [p for p in PP_CHOICES if not cluster.gpus or p <= cluster.gpus]
    notes: list[str] = []
    last_error = ""
    for pp in choices:
        stages = pp * cluster.vpp
        if stages > len(units):
            last_error = f"{stages} stages for {len(units)} units: fewer stages (--pp, --vpp)"
            continue
        if cluster.gpus and cluster.gpus % pp:
            raise LayoutError(f"--gpus {cluster.gpus} is not a multiple of --pp {pp}")
        dp = cluster.gpus // pp if cluster.gpus else 1
        m = cluster.microbatches or max(pp, batch_rows // (dp * cluster.microbatch_rows))
        if cluster.vpp > 1 and m % pp:
            if cluster.microbatches:
                raise LayoutError(f"--micro-batches {m}: interleaved 1F1B (--vpp {cluster.vpp}) needs a multiple of "
                                  f"--pp {pp}")
            m = max(pp, m // pp * pp)
        fits = _stage_fits(units, tokens, pp, cluster.vpp, m, cluster, dp, capacity)
        try:
            balanced = balanced_split(units, pp, cluster.vpp, fits)
        except ValueError as e:
            last_error = str(e)
            continue
        even = even_split(units, pp, cluster.vpp)
        if pp > cluster.gpus_per_node:
            notes.append(f"{pp} stages cross nodes of {cluster.gpus_per_node} GPUs: stage-to-stage transfers leave the "
                         f"node (transfers are not modelled)")
        if m < pp:
            notes.append(f"{m} micro-batches for {pp} stages: most of the step is bubble; raise the batch or "
                         f"--micro-batches")
        plan = LayoutPlan(model, cluster, units, pp, cluster.vpp, dp, m,
                          _pipeline(units, even, cluster, m, tokens, dp),
                          _pipeline(units, balanced, cluster, m, tokens, dp), notes)
        costs = balanced.costs(units)
        slowest = max(range(len(costs)), key=costs.__getitem__)
        if len(balanced.stages[slowest]) == 1 and len(units) > len(costs):
            only = units[balanced.stages[slowest][0]]
            notes.append(f"stage {slowest} holds the {only.name} alone and is still the slowest: one unit cannot be "
                         f"split over stages (more virtual stages do not help it; a vocabulary-parallel head or a "
                         f"smaller vocabulary would)")
        over = [r for r, b in enumerate(plan.even.memory_bytes_per_rank) if b > capacity]
        if over:
            notes.append(f"the even split does not fit rank(s) {', '.join(map(str, over))} "
                         f"({max(plan.even.memory_bytes_per_rank) / GIB:.1f} GiB > {capacity / GIB:.1f} usable)")
        problems = engines.check_megatron_layout(plan.megatron_layout(), pp, model.n_layers, cluster.mtp_layers)
        if problems:
            raise LayoutError(f"internal: the layout breaks Megatron's rules: {'; '.join(problems)}")
        return plan
    raise LayoutError(last_error or "no pipeline size to try: give --pp")

