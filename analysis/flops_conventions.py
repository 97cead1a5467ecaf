"""How much the FLOPs conventions disagree, for our tiny models and for published MoE shapes.

Published scaling laws differ exactly in how they count C (6N with total or active parameters, attention in or
out, output head in or out). This prints, for each shape, FLOPs per token under every convention recorded with a
run, and its ratio to M (the DeepSeek / Ling convention that `scaling` uses by default).

    python analysis/flops_conventions.py
"""

from __future__ import annotations

from scaling.config import ModelConfig
from scaling.flops import CONVENTIONS, count

SHAPES = {
    # the defaults of this repository (sweeps/model/)
    "tiny_moe (d64 L2 E8 k2)": ModelConfig(),
    "tiny_dense (d64 L2)": ModelConfig(n_experts=1, top_k=1, d_expert=256),
    # Ling's architecture-protocol baseline: 64 experts, 2 active + 1 shared (A = 3/65), fine-grained experts
    "Ling-style (d1024 L16 E64 k2+1s, G=4)": ModelConfig(d_model=1024, n_layers=16, n_heads=16, seq_len=4096,
                                                         vocab_size=128000, n_experts=64, top_k=2,
                                                         n_shared_experts=1, d_expert=512, n_dense_layers=1),
    # a Ling 2.0-like ratio: 256 routed experts, 8 active + 1 shared (A ~ 3.5%)
    "Ling2-style (d2048 L20 E256 k8+1s)": ModelConfig(d_model=2048, n_layers=20, n_heads=16, seq_len=4096,
                                                      vocab_size=157000, n_experts=256, top_k=8,
                                                      n_shared_experts=1, d_expert=512, n_dense_layers=1),
}


def main() -> None:
    header = f"{'shape':40s} {'A':>7s} {'N_total':>10s} {'N_active':>10s} " + " ".join(
        f"{name:>16s}" for name in CONVENTIONS)
    print(header)
    for label, cfg in SHAPES.items():
        c = count(cfg)
        cells = " ".join(f"{c.flops_per_token[n]:9.3g} ({c.flops_per_token[n] / c.M:4.2f})" for n in CONVENTIONS)
        print(f"{label:40s} {c.activation_ratio:7.4f} {c.params_non_embedding:10.3g} "
              f"{c.params_active_non_embedding:10.3g} {cells}")
    print("\nEach cell: FLOPs per token (forward+backward), and in brackets its ratio to M.")


if __name__ == "__main__":
    main()
