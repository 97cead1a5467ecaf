"""The decoder-only transformer (ARCHITECTURE section 4): pre-norm RMSNorm, RoPE, QK-norm, SwiGLU / MoE FFNs.

The model knows nothing of runs, sweeps or records.

Shapes in names (one meaning per letter across the model files): B batch, T time, D model width, V vocabulary,
H query heads, Hkv key/value heads, Dh head width, R rotary frequencies (Dh / 2). moe.py adds E, K and F.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from scaling.config import ModelConfig
from scaling.flops import d_ff_dense, head_dim, n_kv_heads
from scaling.model.moe import MoE, SwiGLU


def rope_tables(seq_len: int, dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables of shape (T, R = Dh/2) for rotary position embeddings."""
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    angles_TR = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
    return angles_TR.cos(), angles_TR.sin()


def apply_rope(x_BHTDh: torch.Tensor, cos_TR: torch.Tensor, sin_TR: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (first half, second half) of each head's features by position-dependent angles (in fp32)."""
    T = x_BHTDh.shape[-2]
    cos_TR, sin_TR = cos_TR[:T], sin_TR[:T]
    if torch.compiler.is_compiling():  # the formula: inductor fuses it and derives the backward
        x1, x2 = x_BHTDh.float().chunk(2, dim=-1)
        return torch.cat([x1 * cos_TR - x2 * sin_TR, x1 * sin_TR + x2 * cos_TR], dim=-1).to(x_BHTDh.dtype)
    return _Rotate.apply(x_BHTDh, cos_TR, sin_TR)


def _rotate(x_BHTDh: torch.Tensor, cos_TR: torch.Tensor, sin_TR: torch.Tensor, sign: float) -> torch.Tensor:
    """(x1, x2) -> (x1 cos - sign x2 sin, x2 cos + sign x1 sin), written into one output (no cat)."""
    x1, x2 = x_BHTDh.chunk(2, dim=-1)
    out_BHTDh = torch.empty_like(x_BHTDh)
    o1, o2 = out_BHTDh.chunk(2, dim=-1)
    torch.mul(x1, cos_TR, out=o1).addcmul_(x2, sin_TR, value=-sign)
    torch.mul(x2, cos_TR, out=o2).addcmul_(x1, sin_TR, value=sign)
    return out_BHTDh


class _Rotate(torch.autograd.Function):
    """Eager RoPE whose backward is the inverse rotation: fewer element-wise passes than autograd makes of the
    formula (muls, adds, chunk and cat each way)."""

    @staticmethod
    def forward(ctx, x_BHTDh, cos_TR, sin_TR):
        ctx.save_for_backward(cos_TR, sin_TR)
        return _rotate(x_BHTDh.float(), cos_TR, sin_TR, 1.0).to(x_BHTDh.dtype)

    @staticmethod
    def backward(ctx, grad_BHTDh):
        cos_TR, sin_TR = ctx.saved_tensors
        return _rotate(grad_BHTDh.float(), cos_TR, sin_TR, -1.0).to(grad_BHTDh.dtype), None, None


class Attention(nn.Module):
    """Causal self-attention with grouped-query heads, QK-norm (before RoPE) and RoPE."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv, self.dh = cfg.n_heads, n_kv_heads(cfg), head_dim(cfg)
        self.wqkv = nn.Linear(cfg.d_model, (self.n_heads + 2 * self.n_kv) * self.dh, bias=False)
        self.wo = nn.Linear(self.n_heads * self.dh, cfg.d_model, bias=False)
        self.q_norm = nn.RMSNorm(self.dh, eps=1e-6) if cfg.qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(self.dh, eps=1e-6) if cfg.qk_norm else nn.Identity()
        self.observer = None
        """Set by diagnostics.Monitor for one step: called as observer(q_BHTDh, k_BHTDh) after RoPE."""
        cos, sin = rope_tables(cfg.seq_len, self.dh, cfg.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, x_BTD: torch.Tensor) -> torch.Tensor:
        B, T, _ = x_BTD.shape
        q, k, v = self.wqkv(x_BTD).split([self.n_heads * self.dh, self.n_kv * self.dh, self.n_kv * self.dh], -1)
        q_BHTDh = self.q_norm(q.view(B, T, self.n_heads, self.dh)).transpose(1, 2)
        k_BHkvTDh = self.k_norm(k.view(B, T, self.n_kv, self.dh)).transpose(1, 2)
        v_BHkvTDh = v.view(B, T, self.n_kv, self.dh).transpose(1, 2)
        q_BHTDh = apply_rope(q_BHTDh, self.rope_cos, self.rope_sin)
        k_BHkvTDh = apply_rope(k_BHkvTDh, self.rope_cos, self.rope_sin)
        if self.n_kv != self.n_heads:
            rep = self.n_heads // self.n_kv
            k_BHkvTDh = k_BHkvTDh.repeat_interleave(rep, dim=1)
            v_BHkvTDh = v_BHkvTDh.repeat_interleave(rep, dim=1)
        if self.observer is not None:
            self.observer(q_BHTDh, k_BHkvTDh)
        y_BHTDh = F.scaled_dot_product_attention(q_BHTDh, k_BHkvTDh, v_BHkvTDh, is_causal=True)
        return self.wo(y_BHTDh.transpose(1, 2).reshape(B, T, self.n_heads * self.dh))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, dense: bool):
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.d_model, eps=1e-6)
        self.attn = Attention(cfg)
        self.ffn_norm = nn.RMSNorm(cfg.d_model, eps=1e-6)
        self.ffn = SwiGLU(cfg.d_model, d_ff_dense(cfg)) if dense else MoE(cfg)

    def forward(self, x_BTD: torch.Tensor) -> torch.Tensor:
        x_BTD = x_BTD + self.attn(self.attn_norm(x_BTD))
        return x_BTD + self.ffn(self.ffn_norm(x_BTD))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg, dense=i < cfg.n_dense_layers) for i in range(cfg.n_layers))
        self.norm = nn.RMSNorm(cfg.d_model, eps=1e-6)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, mean=0.0, std=std)
            elif "norm" in name:
                nn.init.ones_(p)

    @property
    def moe_layers(self) -> list[MoE]:
        return [b.ffn for b in self.blocks if isinstance(b.ffn, MoE)]

    def forward(self, idx_BT: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V)."""
        x_BTD = self.embed(idx_BT)
        for block in self.blocks:
            x_BTD = block(x_BTD)
        return self.head(self.norm(x_BTD))

    def router_losses(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum over MoE layers of the auxiliary balancing loss and the z-loss of the last forward pass."""
        layers = self.moe_layers
        aux = sum((m.aux_loss for m in layers), torch.zeros(()))
        z = sum((m.z_loss for m in layers), torch.zeros(()))
        return aux, z

    def update_expert_bias(self) -> None:
        for m in self.moe_layers:
            m.update_bias()

    def expert_load(self) -> list[list[float]]:
        """Tokens routed to each expert of each MoE layer since the last reset (a list per layer)."""
        return [m.load_E.tolist() for m in self.moe_layers]

    def expert_load_buffers(self) -> list[torch.Tensor]:
        """The load counters themselves (one per MoE layer), e.g. to sum them across data-parallel ranks."""
        return [m.load_E for m in self.moe_layers]

    def step_load_buffers(self) -> list[torch.Tensor]:
        """Each MoE layer's load of the last forward pass (what the bias update reads), to sum across ranks."""
        return [m._step_load_E for m in self.moe_layers]

    def set_step_loads(self, loads: list[torch.Tensor]) -> None:
        """Replace each MoE layer's load of the last forward pass (e.g. by the sum over a step's micro-batches)."""
        for m, load_E in zip(self.moe_layers, loads, strict=True):
            m._step_load_E = load_E

    def forget_last_load(self) -> None:
        """Undo the load counts of the last forward pass (a rank that ran a step on a row weighted 0)."""
        for m in self.moe_layers:
            m.load_E -= m._step_load_E.to(m.load_E.device)
            m._step_load_E = torch.zeros_like(m._step_load_E)

    def reset_expert_load(self) -> None:
        for m in self.moe_layers:
            m.reset_load()


def build_model(cfg: ModelConfig) -> Transformer:
    return Transformer(cfg)
