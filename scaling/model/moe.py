"""Routing and experts: the MoE feed-forward layer, and nothing else (ARCHITECTURE section 4).

Shapes in names (one meaning per letter across the model files): T tokens (batch x time flattened), D model width,
E routed experts, K top-k (experts per token), F expert width (2F: the fused gate and up projections),
N = T x K token-expert assignments; B batch where a tensor keeps it. transformer.py adds H, Hkv, Dh, R and V.

Dispatch is dropless and sort-based: the T*K (token, expert) assignments are sorted by expert once, the sorted
tokens go through every expert as one grouped matmul (`torch._grouped_mm`) or a matmul per contiguous slice, and
the outputs are put back in assignment order and summed per token with their weights. Both moves are row gathers
whose backward gathers by the inverse permutation (no scatter-add), and there is no boolean mask over all tokens
per expert. In eager mode the SwiGLU activation and RoPE have hand-written backwards with fewer element-wise
passes; under torch.compile the plain formulas are traced and fused. With E = 1 (the dense baseline) the layer is
a plain SwiGLU: no routing at all.

Balancing: 'aux_free' adds a per-expert bias to the scores used for *selection* only (DeepSeek-V3); after every
optimizer step `update_bias()` moves it by `bias_update_rate` towards equal load. 'aux_loss' adds the Switch loss
E * sum_e f_e * P_e. The router z-loss (ST-MoE) is added in both cases. Router logits and load statistics are fp32.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from scaling.config import ModelConfig
from scaling.flops import d_shared
from scaling.model.fp8 import Fp8GroupedMatmul, fp8_matmul

HAS_GROUPED_MM = hasattr(torch, "_grouped_mm")

if HAS_GROUPED_MM:
    # torch._grouped_mm as a custom op with its own backward: torch.compile then traces it as one opaque node
    # (its built-in fake kernel accepts only bf16, so fp32 would not compile), and the incoming gradient is made
    # contiguous (the CPU kernel rejects expanded gradients).
    @torch.library.custom_op("scaling::grouped_mm", mutates_args=())
    def grouped_mm_op(x: torch.Tensor, w: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
        return torch._grouped_mm(x, w, offs=offs)

    @grouped_mm_op.register_fake
    def _(x, w, offs):
        return x.new_empty(x.shape[0], w.shape[2])

    @torch.library.custom_op("scaling::grouped_mm_backward", mutates_args=())
    def grouped_mm_backward(x: torch.Tensor, w: torch.Tensor, offs: torch.Tensor,
                            grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grad = grad.contiguous()
        grad_x = torch._grouped_mm(grad, w.transpose(1, 2), offs=offs)  # (N, F) x (E, F, D) -> (N, D)
        grad_w = torch._grouped_mm(x.t(), grad, offs=offs)  # (D, N) x (N, F), groups along N -> (E, D, F)
        return grad_x, grad_w

    @grouped_mm_backward.register_fake
    def _(x, w, offs, grad):
        return torch.empty_like(x), torch.empty_like(w)

    def _setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def _backward(ctx, grad):
        x, w, offs = ctx.saved_tensors
        grad_x, grad_w = grouped_mm_backward(x, w, offs, grad)
        return grad_x, grad_w, None

    grouped_mm_op.register_autograd(_backward, setup_context=_setup_context)


class SwiGLU(nn.Module):
    """Dense SwiGLU FFN: down(silu(gate(x)) * up(x)); gate and up fused in one matmul."""

    def __init__(self, d_model: int, d_hidden: int):
        super().__init__()
        self.w_gate_up = nn.Linear(d_model, 2 * d_hidden, bias=False)
        self.w_down = nn.Linear(d_hidden, d_model, bias=False)

    def forward(self, x_TD: torch.Tensor) -> torch.Tensor:
        return self.w_down(swiglu(self.w_gate_up(x_TD)))


def swiglu(h_T2F: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up of a fused gate|up projection (gate is the first half of the last dimension)."""
    if torch.compiler.is_compiling():  # the formula: inductor fuses it and derives the backward
        gate_TF, up_TF = h_T2F.chunk(2, dim=-1)
        return F.silu(gate_TF) * up_TF
    return _SwiGLUActivation.apply(h_T2F)


class _SwiGLUActivation(torch.autograd.Function):
    """Eager silu(gate) * up whose backward writes the gate and up gradients straight into the two halves of one
    tensor: autograd of the formula would make them separately and then concatenate them (one more pass)."""

    @staticmethod
    def forward(ctx, h_T2F):
        gate_TF, up_TF = h_T2F.chunk(2, dim=-1)
        silu_TF = F.silu(gate_TF)
        ctx.save_for_backward(h_T2F, silu_TF)
        return silu_TF * up_TF

    @staticmethod
    def backward(ctx, grad_TF):
        h_T2F, silu_TF = ctx.saved_tensors
        gate_TF, up_TF = h_T2F.chunk(2, dim=-1)
        grad_T2F = torch.empty_like(h_T2F)
        grad_gate_TF, grad_up_TF = grad_T2F.chunk(2, dim=-1)
        torch.mul(grad_TF, silu_TF, out=grad_up_TF)
        torch.ops.aten.silu_backward.grad_input(grad_TF * up_TF, gate_TF, grad_input=grad_gate_TF)
        return grad_T2F


def grouped_matmul(x_ND: torch.Tensor, w_EDF: torch.Tensor, counts_E: torch.Tensor, offs_E: torch.Tensor,
                   use_grouped_mm: bool) -> torch.Tensor:
    """Rows of x sorted by expert (counts_E rows each) times that expert's weight: one grouped matmul or slices.

    bf16 operands on the CPU are multiplied in fp32 and the product rounded to bf16: the same numbers as a GPU's
    bf16 GEMM (bf16 inputs, fp32 accumulation), where the CPU's own bf16 kernels for these shapes were 3-4x slower
    than fp32 (measured on the 2-core CPU: the default model's bf16 step 104 ms against 30 ms in fp32)."""
    if x_ND.dtype == torch.bfloat16 and x_ND.device.type == "cpu":
        return _grouped_matmul(x_ND.float(), w_EDF.float(), counts_E, offs_E, use_grouped_mm).to(torch.bfloat16)
    return _grouped_matmul(x_ND, w_EDF, counts_E, offs_E, use_grouped_mm)


def _grouped_matmul(x_ND, w_EDF, counts_E, offs_E, use_grouped_mm: bool) -> torch.Tensor:
    if use_grouped_mm:
        return grouped_mm_op(x_ND, w_EDF, offs_E)
    # Fallback: contiguous slices. Weights unbound once (indexing w_EDF[e] in a loop zero-fills its whole
    # gradient once per expert in backward).
    slices = x_ND.split(counts_E.tolist())
    return torch.cat([xs @ w for xs, w in zip(slices, w_EDF.unbind(0), strict=True)])


class _DispatchRows(torch.autograd.Function):
    """x[token_N] for the N = T * K assignments in sorted order (token_N = order_N // K), each token's row once per
    expert it goes to. The backward gathers each token's K gradient rows back into assignment order (by the inverse
    permutation) and sums them: no repeat_interleave copy in the forward, no scatter-add in the backward."""

    @staticmethod
    def forward(ctx, x_TD: torch.Tensor, token_N: torch.Tensor, inverse_N: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(inverse_N)
        ctx.T = x_TD.shape[0]
        return x_TD.index_select(0, token_N)

    @staticmethod
    def backward(ctx, grad_ND: torch.Tensor):
        (inverse_N,) = ctx.saved_tensors
        grad_TKD = grad_ND.index_select(0, inverse_N).view(ctx.T, -1, grad_ND.shape[1])
        return grad_TKD.sum(1), None, None


class _PermuteRows(torch.autograd.Function):
    """x[perm] for a permutation `perm` whose inverse is `inv`: the backward is g[inv], a gather, where indexing's
    own backward would scatter-add (slower on CPU, and atomics on GPU)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, perm: torch.Tensor, inv: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(inv)
        return x.index_select(0, perm)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (inv,) = ctx.saved_tensors
        return grad.index_select(0, inv), None, None


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype autocast would give a matmul on x (grouped_mm is not on autocast's op lists)."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


class MoE(nn.Module):
    """E routed SwiGLU experts of width F with top-K routing, optional shared experts, balancing and z-loss.

    With E = 1 (the dense baseline) there is no router: every token goes to the single expert with weight 1.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        D, E, F_ = cfg.d_model, cfg.n_experts, cfg.d_expert
        self.n_experts, self.top_k = E, cfg.top_k
        self.router = nn.Linear(D, E, bias=False) if E > 1 else None
        self.w_gate_up_EDF = nn.Parameter(torch.empty(E, D, 2 * F_))
        self.w_down_EFD = nn.Parameter(torch.empty(E, F_, D))
        width_shared = cfg.n_shared_experts * d_shared(cfg)
        # n_s shared experts of width d_s are one SwiGLU of width n_s * d_s (same output, params and FLOPs).
        self.shared = SwiGLU(D, width_shared) if width_shared else None
        self.register_buffer("expert_bias_E", torch.zeros(E), persistent=True)
        # Tokens routed to each expert since the last `reset_load()` (fp32; observability and aux-free updates).
        self.register_buffer("load_E", torch.zeros(E), persistent=True)
        self._step_load_E = torch.zeros(E)  # load of the last forward pass, for the bias update
        self.aux_loss = torch.zeros(())
        self.z_loss = torch.zeros(())
        self.use_grouped_mm = self._pick_dispatch(cfg)
        self.fp8_scaling: str | None = None
        """Set by fp8.convert: the expert GEMMs quantize their operands to FP8 with this scaling."""
        self.observer = None
        """Set by diagnostics.Monitor for one step: called as observer(gemm name, input, weight, output)."""

    @staticmethod
    def _pick_dispatch(cfg: ModelConfig) -> bool:
        if cfg.dispatch == "slices":
            return False
        aligned = cfg.d_model % 8 == 0 and cfg.d_expert % 8 == 0  # grouped_mm needs 16-byte-aligned strides
        if cfg.dispatch == "grouped_mm":
            if not HAS_GROUPED_MM:
                raise RuntimeError("model.dispatch=grouped_mm needs torch >= 2.8 (torch._grouped_mm); use slices")
            return True
        return HAS_GROUPED_MM and aligned

    # ---- routing -------------------------------------------------------------------------------------
    def route(self, x_TD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-K expert ids and combine weights per token; sets aux_loss, z_loss and the load counts."""
        T, E, K = x_TD.shape[0], self.n_experts, self.top_k
        if self.router is None:
            ids_TK = torch.zeros(T, 1, dtype=torch.long, device=x_TD.device)
            weights_TK = torch.ones(T, 1, dtype=torch.float32, device=x_TD.device)
            self._record_load(ids_TK)
            return ids_TK, weights_TK
        logits_TE = F.linear(x_TD.float(), self.router.weight.float())
        if self.cfg.score_func == "softmax":
            scores_TE = logits_TE.softmax(dim=-1)
        else:
            scores_TE = logits_TE.sigmoid()
        select_TE = scores_TE + self.expert_bias_E if self.cfg.balancing == "aux_free" else scores_TE
        ids_TK = select_TE.topk(K, dim=-1).indices
        weights_TK = scores_TE.gather(-1, ids_TK)
        if self.cfg.norm_topk:
            weights_TK = weights_TK / weights_TK.sum(dim=-1, keepdim=True).clamp_min(1e-20)
        counts_E = self._record_load(ids_TK)

        zero = logits_TE.new_zeros(())
        self.z_loss = torch.logsumexp(logits_TE, dim=-1).square().mean() if self.cfg.z_loss_coef else zero
        if self.cfg.balancing == "aux_loss" and self.training:
            frac_tokens_E = counts_E / (T * K)
            probs_TE = scores_TE / scores_TE.sum(dim=-1, keepdim=True)  # sigmoid scores normalised per token
            self.aux_loss = E * (frac_tokens_E * probs_TE.mean(dim=0)).sum()
        else:
            self.aux_loss = zero
        return ids_TK, weights_TK

    def _record_load(self, ids_TK: torch.Tensor) -> torch.Tensor:
        flat = ids_TK.flatten()
        counts_E = torch.zeros(self.n_experts, device=flat.device).scatter_add_(
            0, flat, torch.ones_like(flat, dtype=torch.float32))
        if self.training:
            self._step_load_E = counts_E
            self.load_E += counts_E
        return counts_E

    @torch.no_grad()
    def update_bias(self) -> None:
        """Aux-loss-free balancing: raise the bias of under-loaded experts, lower it for over-loaded ones."""
        if self.cfg.balancing != "aux_free" or self.router is None:
            return
        load_E = self._step_load_E.to(self.expert_bias_E.device)
        self.expert_bias_E += self.cfg.bias_update_rate * torch.sign(load_E.mean() - load_E)

    def reset_load(self) -> None:
        self.load_E.zero_()

    # ---- experts -------------------------------------------------------------------------------------
    def forward(self, x_BTD: torch.Tensor) -> torch.Tensor:
        B, T_, D = x_BTD.shape
        x_TD = x_BTD.reshape(-1, D)
        if self.router is None:  # E = 1: the dense baseline, a plain SwiGLU on the single expert's weights
            self._record_load_dense(x_TD.shape[0])
            out_TD = self._dense(x_TD)
        else:
            ids_TK, weights_TK = self.route(x_TD)
            out_TD = self.experts(x_TD, ids_TK, weights_TK)
        if self.shared is not None:
            out_TD = out_TD + self.shared(x_TD)
        return out_TD.view(B, T_, D)

    def _dense(self, x_TD: torch.Tensor) -> torch.Tensor:
        w_gate_up_DF, w_down_FD = self.w_gate_up_EDF[0], self.w_down_EFD[0]
        scaling = self.fp8_scaling

        def matmul(x, w):
            return fp8_matmul(x, w, scaling) if scaling else x @ w

        a_TF = swiglu(self._observed("experts.gate_up", x_TD, w_gate_up_DF, matmul(x_TD, w_gate_up_DF)))
        return self._observed("experts.down", a_TF, w_down_FD, matmul(a_TF, w_down_FD))

    def _observed(self, gemm: str, x: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """y = x @ w, shown to the observer (diagnostics) when one is set."""
        if self.observer is not None:
            self.observer(gemm, x, w, y)
        return y

    def _expert_matmul(self, x_ND, w_EDF, counts_E, offs_E) -> torch.Tensor:
        """The grouped expert GEMM, through FP8 when the layer was converted."""
        matmul = functools.partial(grouped_matmul, use_grouped_mm=self.use_grouped_mm)
        if not self.fp8_scaling:
            return matmul(x_ND, w_EDF, counts_E, offs_E)
        return Fp8GroupedMatmul.apply(x_ND, w_EDF, counts_E, offs_E, matmul, self.fp8_scaling)

    def _record_load_dense(self, n_tokens: int) -> None:
        if self.training:
            self._step_load_E = torch.full((1,), float(n_tokens))
            self.load_E += n_tokens

    def experts(self, x_TD: torch.Tensor, ids_TK: torch.Tensor, weights_TK: torch.Tensor) -> torch.Tensor:
        """Sort (token, expert) pairs by expert, run each expert on its contiguous rows, put the rows back in
        assignment order and sum each token's K outputs with their weights."""
        T, K = ids_TK.shape
        D = x_TD.shape[1]
        flat_ids_N = ids_TK.flatten()  # N = T * K assignments, n = t * K + k
        order_N = flat_ids_N.argsort(stable=True)  # sorted position -> assignment
        inverse_N = order_N.argsort()  # assignment -> sorted position
        counts_E = torch.zeros(self.n_experts, dtype=torch.long, device=x_TD.device).scatter_add_(
            0, flat_ids_N, torch.ones_like(flat_ids_N))
        offs_E = counts_E.cumsum(0).to(torch.int32)
        dtype = _compute_dtype(x_TD)
        x_ND = _DispatchRows.apply(x_TD.to(dtype), order_N.div(K, rounding_mode="floor"), inverse_N)
        w_gate_up_EDF, w_down_EFD = self.w_gate_up_EDF.to(dtype), self.w_down_EFD.to(dtype)
        h_N2F = self._observed("experts.gate_up", x_ND, w_gate_up_EDF,
                               self._expert_matmul(x_ND, w_gate_up_EDF, counts_E, offs_E))
        a_NF = swiglu(h_N2F)
        y_ND = self._observed("experts.down", a_NF, w_down_EFD,
                              self._expert_matmul(a_NF, w_down_EFD, counts_E, offs_E))
        y_TKD = _PermuteRows.apply(y_ND, inverse_N, order_N).view(T, K, D)
        return (y_TKD.float() * weights_TK.unsqueeze(-1)).sum(1).to(x_TD.dtype)
