"""`scaling`: a laboratory for Mixture-of-Experts scaling laws.

Light on import: torch, wandb and matplotlib are imported by the modules that need them, not here. The one thing
done on import is `cpu_blas.enable()`, which must run before torch loads: on AMD CPUs with AVX-512 it makes torch's
MKL use its AVX-512 matmul kernels (about 2x the fp32 matmul throughput; `SCALING_MKL_AVX512=0` turns it off).
"""

from scaling import cpu_blas

__version__ = "0.1.0"

cpu_blas.enable()
