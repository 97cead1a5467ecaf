"""Fitting scaling laws from run records (numpy, scipy and pandas only; matplotlib when figures are drawn; no torch).

inputs (runs from the store, a CSV or W&B) -> optima (each budget's bowl, resampled from its runs) -> powerlaw,
loss_laws, leverage, precision_gap (the laws, each a `law.LawFit`; intervals as `uncertainty` says) -> verdict (how
far each law can be trusted) -> report (all of them, with the held-out check); plots draws them. Statistics only:
turning laws back into runs (the recommendation, verify.yaml, law-centred grids) is scaling/advise/.
"""
