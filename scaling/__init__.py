"""`scaling`: a laboratory for Mixture-of-Experts scaling laws.

Light on import: torch, wandb and matplotlib are imported by the modules that need them, not here, and nothing is
loaded or built on import. The entry points that train call `scaling.cpu_blas.enable()` before torch loads (on AMD
CPUs with AVX-512 it makes torch's MKL use its AVX-512 matmul kernels; `SCALING_MKL_AVX512=0` turns it off).
"""

__version__ = "0.1.0"
