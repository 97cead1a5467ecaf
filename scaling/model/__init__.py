"""The MoE transformer. Knows nothing of runs, sweeps or records."""

from scaling.model.moe import MoE, SwiGLU
from scaling.model.transformer import Transformer, build_model

__all__ = ["MoE", "SwiGLU", "Transformer", "build_model"]
