"""Every FLOPs and parameter formula of `scaling`, in one place (ARCHITECTURE section 3). Pure Python: no torch.

Conventions (per token, forward + backward = 3 x forward, a multiply-add = 2 FLOPs):

- ``M`` (DeepSeek LLM / Ling convention, our default): every non-embedding matmul a token passes through:
  attention projections, router, the top_k routed experts it is sent to, shared experts, dense FFNs, plus the
  attention scores (QK^T and AV) counted over the full T x T matrix, as DeepSeek's
  ``M = 72 n_layer d^2 + 12 n_layer d l_seq`` does (no causal discount). Excludes the input embedding and the
  output head. Training compute ``C = M * D``.
- ``M_with_head``: M plus the output head matmul (6 d V per token).
- ``6N_total``: 6 x all non-embedding parameters (Kaplan's 6N with total MoE parameters: overstates MoE compute).
- ``6N_active``: 6 x active non-embedding parameters (routed experts counted at top_k / n_experts).
- ``6N_active_attn``: 6N_active plus attention scores 12 L T d_attn (Kaplan's C_forward with context term x 3;
  PaLM's MFU convention without the head).

Parameters: ``embedding`` is the input embedding; ``head`` is the untied output head (0 when tied);
``non_embedding`` is everything else (norms included), the N of Kaplan and DeepSeek.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from scaling.config import ModelConfig

CONVENTIONS = ("M", "M_with_head", "6N_total", "6N_active", "6N_active_attn")
"""Names of the FLOPs-per-token conventions recorded with every run; a fit picks one by name."""


@dataclass(frozen=True)
class ModelCounts:
    """Parameter counts, FLOPs per token under each convention, and the MoE shape descriptors of one model."""

    params_total: int
    params_embedding: int
    params_head: int
    params_non_embedding: int
    params_active_non_embedding: int
    params_active: int
    flops_per_token: dict
    """FLOPs per token (forward+backward) under each name of CONVENTIONS."""
    activation_ratio: float
    sharing_ratio: float
    granularity: float
    granularity_krajewski: float

    @property
    def M(self) -> float:  # noqa: N802 - the field's name in the literature
        return self.flops_per_token["M"]

    def as_dict(self) -> dict:
        return asdict(self)


# ---- MoE shape (Ling's definitions; ARCHITECTURE section 3) ---------------------------------------------------
def activation_ratio(top_k: int, n_shared: int, n_experts: int) -> float:
    """A = (E_a + E_s) / (E + E_s): activated routed plus shared experts over routed plus shared."""
    return (top_k + n_shared) / (n_experts + n_shared)


def experts_for_activation(A: float, top_k: int, n_shared: int) -> float:
    """The number of routed experts (not rounded) that gives activation ratio A at fixed top_k and shared experts."""
    return (top_k + n_shared) / A - n_shared


def granularity(d_model: int, d_expert: float) -> float:
    """G = 2 d_model / d_expert (Ling; Krajewski et al.'s is twice this)."""
    return 2 * d_model / d_expert


def expert_width_for(G: float, d_model: int) -> float:
    """The expert width d_expert (not rounded) that gives granularity G."""
    return 2 * d_model / G


def d_shared(m: ModelConfig) -> int:
    return m.d_shared if m.d_shared is not None else m.d_expert


def d_ff_dense(m: ModelConfig) -> int:
    return m.d_ff_dense if m.d_ff_dense is not None else (m.top_k + m.n_shared_experts) * m.d_expert


def head_dim(m: ModelConfig) -> int:
    return m.d_model // m.n_heads


def n_kv_heads(m: ModelConfig) -> int:
    return m.n_kv_heads or m.n_heads


def _attention_params(m: ModelConfig) -> int:
    hd = head_dim(m)
    qkv = m.d_model * (m.n_heads + 2 * n_kv_heads(m)) * hd
    out = m.n_heads * hd * m.d_model
    qk_norm = 2 * hd if m.qk_norm else 0
    return qkv + out + qk_norm


def _swiglu_params(d_model: int, d_hidden: int) -> int:
    return 3 * d_model * d_hidden  # gate, up: d -> h; down: h -> d


def _router_params(m: ModelConfig) -> int:
    return m.d_model * m.n_experts if m.n_experts > 1 else 0  # E=1 (dense baseline) needs no router


def _moe_params(m: ModelConfig, active: bool) -> int:
    n_routed = m.top_k if active else m.n_experts
    routed = n_routed * _swiglu_params(m.d_model, m.d_expert)
    shared = _swiglu_params(m.d_model, m.n_shared_experts * d_shared(m))
    return _router_params(m) + routed + shared


def layer_params(m: ModelConfig, moe: bool) -> int:
    """Parameters of one transformer layer: attention, its two norms, and a routed MoE (all experts) or the dense
    FFN of the first n_dense_layers."""
    ffn = _moe_params(m, active=False) if moe else _swiglu_params(m.d_model, d_ff_dense(m))
    return _attention_params(m) + 2 * m.d_model + ffn


def _attention_scores_forward(m: ModelConfig) -> int:
    return 2 * 2 * m.seq_len * m.n_heads * head_dim(m)  # QK^T and AV over the full T x T matrix


def layer_forward_flops(m: ModelConfig, moe: bool) -> int:
    """Forward matmul FLOPs per token of one transformer layer (2 per multiply-add; backward is 2x forward):
    attention projections and scores, and the MoE FFN (router, the top_k routed experts, the shared ones) or the
    dense FFN."""
    d, hd, nh = m.d_model, head_dim(m), m.n_heads
    attn_proj = 2 * (d * (nh + 2 * n_kv_heads(m)) * hd + nh * hd * d)
    if moe:
        ffn = 2 * (_router_params(m) + m.top_k * _swiglu_params(d, m.d_expert)
                   + _swiglu_params(d, m.n_shared_experts * d_shared(m)))
    else:
        ffn = 2 * _swiglu_params(d, d_ff_dense(m))
    return attn_proj + _attention_scores_forward(m) + ffn


def head_forward_flops(m: ModelConfig) -> int:
    """Forward matmul FLOPs per token of the output head (d_model x vocab)."""
    return 2 * m.d_model * m.vocab_size


def count(m: ModelConfig) -> ModelCounts:
    """Parameters and FLOPs per token of the model `m` describes (see the module docstring)."""
    d, L, V = m.d_model, m.n_layers, m.vocab_size
    n_moe = L - m.n_dense_layers

    total_ne = m.n_dense_layers * layer_params(m, moe=False) + n_moe * layer_params(m, moe=True) + d  # final norm
    active_ne = total_ne - n_moe * (_moe_params(m, active=False) - _moe_params(m, active=True))
    embedding = V * d
    head = 0 if m.tie_embeddings else V * d

    # Forward matmul FLOPs per token, then x3 for forward + backward.
    forward = m.n_dense_layers * layer_forward_flops(m, moe=False) + n_moe * layer_forward_flops(m, moe=True)
    M = 3 * forward
    head_flops = 3 * head_forward_flops(m)
    attn_scores = _attention_scores_forward(m)

    flops = {
        "M": float(M),
        "M_with_head": float(M + head_flops),
        "6N_total": float(6 * total_ne),
        "6N_active": float(6 * active_ne),
        "6N_active_attn": float(6 * active_ne + 3 * L * attn_scores),
    }
    assert set(flops) == set(CONVENTIONS)
    active_experts = m.top_k + m.n_shared_experts
    return ModelCounts(
        params_total=total_ne + embedding + head,
        params_embedding=embedding,
        params_head=head,
        params_non_embedding=total_ne,
        params_active_non_embedding=active_ne,
        params_active=active_ne + embedding + head,
        flops_per_token=flops,
        activation_ratio=activation_ratio(m.top_k, m.n_shared_experts, m.n_experts),
        sharing_ratio=m.n_shared_experts / active_experts,
        granularity=granularity(d, m.d_expert),
        granularity_krajewski=2 * granularity(d, m.d_expert),
    )


MFU_CONVENTION = "M_with_head"
"""The FLOPs per token of model FLOPs utilisation: every matmul a training step runs, the output head included (the
input embedding is a lookup, not a matmul). `scaling bench`, the records' results.mfu and the GPU-hours of a dry
run all count this."""


def mfu(tokens_per_s: float | None, counts: ModelCounts, peak_flops: float | None) -> float | None:
    """Model FLOPs utilisation: tokens/s x FLOPs per token (MFU_CONVENTION) over the device's peak FLOP/s; None
    when either is unknown."""
    if not tokens_per_s or not peak_flops:
        return None
    return tokens_per_s * counts.flops_per_token[MFU_CONVENTION] / peak_flops


def tokens_for_budget(budget_flops: float, flops_per_token: float) -> float:
    """Training tokens D that a budget C buys: D = C / M."""
    return budget_flops / flops_per_token
