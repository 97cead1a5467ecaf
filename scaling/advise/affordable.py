"""The activation ratio a cluster can afford: the A (and G) that maximise the fitted efficiency leverage among the
MoE configurations whose memory fits the GPUs (`scaling fit --target-flops C --memory-per-gpu GB --gpus N`).

Lower A is better in every published fit (Ling: EL grows as A falls, saturating), but at a fixed active size a
lower A means more experts, so more total parameters: 16 bytes each of weights, gradients and AdamW state,
sharded over the GPUs at best. Memory, not FLOPs, is the limit. Here:

1. The model at the target: the swept family's model scaled to the recommended active size (params_active, from
   the allocation law) at the family's shape, d_model and n_layers by the same factor (head width, G, top_k and
   shared experts kept): scale_model.
2. Every whole number of experts E >= top_k gives A = (top_k + shared) / (E + shared); only the A within the EL
   law's fitted range are candidates (the law is not extrapolated in A). G does not change the total
   parameters at fixed A (granularity keeps the expert parameters), so it stays at the law's peak.
3. Each candidate's memory per GPU is scaling/memory.py's plan on the N GPUs (DDP or FSDP, the micro-batch it
   picks) at the recommended batch; the chosen A is the best EL among those that fit; the EL given up is
   EL(unconstrained best) / EL(chosen).
"""

from __future__ import annotations

import math
from dataclasses import replace

from scaling.config import ModelConfig
from scaling.fit.law import LawFit
from scaling.flops import activation_ratio, count, head_dim
from scaling.memory import GIB, plan_parallel

MOST_EXPERTS = 4096
"""The largest number of routed experts considered."""


def scale_model(m: ModelConfig, params_active: float) -> ModelConfig:
    """`m` with d_model and n_layers scaled by one factor so its active non-embedding parameters come near
    `params_active` (they grow as d^2 L): whole heads of the same width, d_expert scaled with d_model (G kept)."""
    s = (params_active / count(m).params_active_non_embedding) ** (1 / 3)
    dh = head_dim(m)
    heads = max(1, round(m.n_heads * s))
    if m.n_kv_heads:
        heads = max(m.n_kv_heads, round(heads / m.n_kv_heads) * m.n_kv_heads)
    d_model = heads * dh
    layers = max(m.n_dense_layers + 1, round(m.n_layers * s))
    d_expert = max(8, round(m.d_expert * d_model / m.d_model / 8) * 8)
    scaled = replace(m, d_model=d_model, n_heads=heads, n_layers=layers, d_expert=d_expert)
    if m.d_ff_dense is not None:
        scaled = replace(scaled, d_ff_dense=round(m.d_ff_dense * d_model / m.d_model))
    if m.d_shared is not None:
        scaled = replace(scaled, d_shared=round(m.d_shared * d_model / m.d_model))
    return scaled


def el_at(law: LawFit, A: float, G: float, C: float) -> float:
    """The efficiency leverage a fitted law gives at (A, G, C): ling_joint uses all three, EL(A) only A."""
    values = {"A": A, "G": G, "C": C}
    return law.value(**{v: values[v] for v in law.variables})


def affordable_activation(law: LawFit, model: ModelConfig, batch_rows: int, C: float, G: float,
                          memory_per_gpu_gb: float, gpus: int) -> dict:
    """The memory-limited choice of A for `model` (already at the target size) trained on `gpus` GPUs of
    `memory_per_gpu_gb` GiB at `batch_rows` rows per step: {"chosen", "unconstrained", "el_given_up", "binds",
    "candidates", ...}; "chosen" is None when no candidate fits (with "why")."""
    lo, hi = law.fitted_range.get("A", [0.0, 1.0])
    shared, k = model.n_shared_experts, model.top_k
    capacity = memory_per_gpu_gb * GIB
    candidates = []
    for E in range(max(k, 2), MOST_EXPERTS + 1):
        A = activation_ratio(k, shared, E)
        if A > hi * (1 + 1e-9):
            continue
        if A < lo * (1 - 1e-9):
            break
        m = replace(model, n_experts=E)
        plan = plan_parallel(m, batch_rows, gpus, "auto", True, capacity)
        candidates.append({"A": A, "n_experts": E, "params_total": count(m).params_total, "el": el_at(law, A, G, C),
                           "fits": bool(plan.fits), "parallel": plan.parallel, "micro_batch": plan.micro_batch,
                           "memory_per_gpu_gib": plan.need.total / GIB})
    out = {"memory_per_gpu_gb": memory_per_gpu_gb, "gpus": gpus, "law": law.name, "A_range": [lo, hi],
           "shape": {"d_model": model.d_model, "n_layers": model.n_layers, "n_heads": model.n_heads,
                     "d_expert": model.d_expert, "top_k": k, "n_shared_experts": shared},
           "params_active": count(model).params_active_non_embedding, "candidates": len(candidates)}
    if not candidates:
        return {**out, "chosen": None, "unconstrained": None, "why": f"no whole number of experts gives an A in the "
                f"law's fitted range [{lo:.3g}, {hi:.3g}] with top_k={k}, n_shared_experts={shared}"}
    best = max(candidates, key=lambda c: c["el"])
    fitting = [c for c in candidates if c["fits"]]
    if not fitting:
        smallest = max(candidates, key=lambda c: c["A"])
        return {**out, "chosen": None, "unconstrained": best, "why": (
            f"even the fewest experts in the law's range (E={smallest['n_experts']}, A={smallest['A']:.3g}, "
            f"{smallest['params_total']:.3g} parameters) need {smallest['memory_per_gpu_gib']:.1f} GiB per GPU on "
            f"{gpus} x {memory_per_gpu_gb:g} GiB: use more GPUs")}
    chosen = max(fitting, key=lambda c: c["el"])
    return {**out, "chosen": chosen, "unconstrained": best, "binds": chosen["n_experts"] != best["n_experts"],
            "el_given_up": best["el"] / chosen["el"] if chosen["el"] > 0 else math.inf}
