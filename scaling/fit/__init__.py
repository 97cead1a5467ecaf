"""Fitting scaling laws from run records (numpy, scipy and pandas only: no torch).

inputs (runs from the store, a CSV or W&B) -> optima, powerlaw, loss_laws, leverage (the laws) -> report (all of
them, with the held-out check) -> recommend (a target budget), check (the wind tunnel).
"""
