"""From fitted laws back to runs (ARCHITECTURE section 2): the one package that turns a fit into training configs.

fitfile (the one reader of fit.json: its laws and the FLOPs convention of their C) and compute (the one converter
between a law's C and a run's `budget_flops`, for a given model) are its ground floor; on them: recommend (the run
at a target budget; affordable: its activation ratio under a memory limit), grids (law-centred lr/batch grids and
the wind-tunnel ladder's budgets, for sweep/plan.py), verify (the verification sweep and the predictions checked by
training), next_sweep (the verdicts' advice as the next sweep), outputs (the files a fit writes) and pipeline (one
`scaling fit`: the statistics of scaling.fit, then all of the above).
"""
