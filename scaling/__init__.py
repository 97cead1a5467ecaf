"""`scaling`: a laboratory for Mixture-of-Experts scaling laws.

Light on import: torch, wandb and matplotlib are imported by the modules that need them, not here.
"""

__version__ = "0.1.0"
