"""Fitting scaling laws from run records (numpy, scipy and pandas only; matplotlib when figures are drawn; no torch).

inputs (runs from the store, a CSV or W&B) -> optima (each budget's bowl, resampled from its runs) -> powerlaw,
loss_laws, leverage (the laws, each a `law.LawFit`; intervals as `uncertainty` says) -> verdict (how far each law
can be trusted) -> report (all of them, with the held-out check) -> recommend (a target budget), check (the
verification sweep and the predictions checked by training) -> outputs (fit.json, overrides, verify.yaml, and the
figures of plots).
"""
