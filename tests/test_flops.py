"""FLOPs and parameter formulas against the model itself: FlopCounterMode over real forward+backward passes."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from scaling import flops
from scaling.config import ModelConfig
from scaling.model import build_model

SEQ = 32
BATCH = 2

SHAPES = {
    "dense": dict(n_experts=1, top_k=1, d_expert=128),
    "top1": dict(n_experts=8, top_k=1, d_expert=64),
    "top2": dict(n_experts=8, top_k=2, d_expert=64),
    "shared": dict(n_experts=8, top_k=2, d_expert=32, n_shared_experts=1),
    "two_shared_wide": dict(n_experts=4, top_k=1, d_expert=32, n_shared_experts=2, d_shared=48),
    "first_dense": dict(n_experts=8, top_k=2, d_expert=64, n_dense_layers=1, n_layers=3),
    "gqa_sigmoid": dict(n_experts=8, top_k=2, d_expert=64, n_kv_heads=2, score_func="sigmoid"),
    "granularity_1": dict(n_experts=4, top_k=1, d_expert=128),  # G = 2 d / d_expert = 1
    "granularity_16": dict(n_experts=64, top_k=16, d_expert=8),  # G = 16, same active width
    "tied": dict(n_experts=4, top_k=2, d_expert=32, tie_embeddings=True),
}


def make_cfg(**kw) -> ModelConfig:
    base = dict(d_model=64, n_layers=2, n_heads=4, seq_len=SEQ, vocab_size=256, dispatch="slices")
    base.update(kw)
    return ModelConfig(**base)


def counted_flops(cfg: ModelConfig) -> tuple[int, dict]:
    """Total counted FLOPs of one forward+backward pass, and the per-op breakdown."""
    torch.manual_seed(0)
    model = build_model(cfg)
    idx = torch.randint(0, cfg.vocab_size, (BATCH, SEQ))
    counter = FlopCounterMode(display=False)
    # The default CPU attention kernel and grouped_mm are invisible to the counter
    # (docs/notes/flop_counter_pitfalls.md): count with the MATH attention backend and per-slice expert matmuls.
    with sdpa_kernel(SDPBackend.MATH), counter:
        logits = model(idx)
        logits.backward(torch.randn_like(logits))
    by_op = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    return counter.get_total_flops(), by_op


@pytest.mark.parametrize("name", list(SHAPES))
def test_flops_per_token_matches_flop_counter(name):
    cfg = make_cfg(**SHAPES[name])
    c = flops.count(cfg)
    total, by_op = counted_flops(cfg)
    tokens = BATCH * SEQ
    head = 3 * 2 * cfg.d_model * cfg.vocab_size * tokens
    attention_scores = sum(v for k, v in by_op.items() if "bmm" in k)  # QK^T and AV (MATH backend)
    assert attention_scores > 0, by_op

    assert c.flops_per_token["M_with_head"] * tokens == pytest.approx(total, rel=0.02)
    assert c.M * tokens == pytest.approx(total - head, rel=0.02)
    # 6N conventions: 6 x active parameters ~ the matmul FLOPs (norm weights are the only difference).
    assert c.flops_per_token["6N_active_attn"] * tokens == pytest.approx(total - head, rel=0.02)
    assert c.flops_per_token["6N_active"] * tokens == pytest.approx(total - head - attention_scores, rel=0.02)


@pytest.mark.parametrize("name", list(SHAPES))
def test_parameter_counts_equal_numel_sums(name):
    cfg = make_cfg(**SHAPES[name])
    model = build_model(cfg)
    c = flops.count(cfg)
    params = dict(model.named_parameters())  # shared (tied) tensors appear once
    total = sum(p.numel() for p in params.values())
    embedding = model.embed.weight.numel()
    head = 0 if cfg.tie_embeddings else model.head.weight.numel()
    routed = sum(p.numel() for n, p in params.items() if "w_gate_up_EDF" in n or "w_down_EFD" in n)
    assert c.params_total == total
    assert c.params_embedding == embedding
    assert c.params_head == head
    assert c.params_non_embedding == total - embedding - head
    active_routed = routed * cfg.top_k // cfg.n_experts
    assert c.params_active_non_embedding == total - embedding - head - routed + active_routed


def test_dense_baseline_has_activation_ratio_one_and_no_router():
    c = flops.count(make_cfg(**SHAPES["dense"]))
    assert c.activation_ratio == 1.0
    model = build_model(make_cfg(**SHAPES["dense"]))
    assert all(m.router is None for m in model.moe_layers)


def test_moe_descriptors_follow_ling_definitions():
    # Ling 2.0: 256 routed experts, 8 active + 1 shared -> A = 9 / 257 ~ 3.5%
    c = flops.count(ModelConfig(d_model=64, n_experts=256, top_k=8, n_shared_experts=1, d_expert=16))
    assert c.activation_ratio == pytest.approx(9 / 257)
    assert c.sharing_ratio == pytest.approx(1 / 9)
    assert c.granularity == 8.0  # 2 d / d_expert
    assert c.granularity_krajewski == 16.0  # 4 d / d_expert: twice Ling's value


def test_m_matches_deepseek_formula_for_a_4x_mlp_dense_model():
    # DeepSeek LLM: M = 72 n_layer d^2 + 12 n_layer d l_seq for a dense model with a 4x MLP (6 x 12 d^2).
    # Ours uses SwiGLU (3 matrices), so a width of 8/3 d has the same 8 d^2 MLP parameters as a 4x GELU MLP.
    d, L, T = 96, 3, 128
    cfg = ModelConfig(d_model=d, n_layers=L, n_heads=4, seq_len=T, n_experts=1, top_k=1, d_expert=256)
    assert flops.count(cfg).M == 72 * L * d**2 + 12 * L * d * T


def test_calibration_anchor_of_the_default_tiny_moe():
    # docs/notes/cpu_training_calibration.md: M = 1,185,792 for d64 L2 E8 top-2 d_expert 128
    assert flops.count(ModelConfig()).M == 1_185_792
