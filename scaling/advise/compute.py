"""The one conversion between a law's compute C and a run's `budget_flops`.

A fit measures C = D x (FLOPs per token under its convention: M, 6N_total, ...; flops.py); the trainer spends
`budget_flops` = D x M (tokens D = budget_flops / M). For one model both count the same tokens, so

    budget_flops = C x M / f_convention(model),        C = budget_flops x f_convention(model) / M.

Every way back from a law to a run (the recommendation, law-centred grids, the ladder, the verification sweep)
converts through these two functions; `law_variables` gives a run's value of every variable a law can have.
"""

from __future__ import annotations

from scaling.config import ModelConfig
from scaling.flops import count


def _per_token(model: ModelConfig, convention: str) -> tuple[float, float]:
    """(FLOPs per token under `convention`, M) of the model."""
    counts = count(model)
    return counts.flops_per_token[convention], counts.M


def budget_flops(C: float, model: ModelConfig | None, convention: str) -> float:
    """The trainer's budget_flops (M convention) of a run of `model` whose compute is C under `convention`; C
    itself for the M convention or without a model (runs fitted from a CSV)."""
    if convention == "M" or model is None:
        return float(C)
    per_token, M = _per_token(model, convention)
    return float(C) * M / per_token


def law_compute(budget: float, model: ModelConfig | None, convention: str) -> float:
    """The compute C under `convention` of a run of `model` trained to `budget` budget_flops (the inverse)."""
    if convention == "M" or model is None:
        return float(budget)
    per_token, M = _per_token(model, convention)
    return float(budget) * per_token / M


def law_variables(budget: float, model: ModelConfig, convention: str) -> dict[str, float]:
    """A run of `model` trained to `budget` budget_flops in a law's variables: C (as `law_compute`), N (active
    non-embedding parameters, the fitter's `params`: fit/inputs.py) and D (tokens, budget_flops / M)."""
    counts = count(model)
    return {"C": law_compute(budget, model, convention), "N": float(counts.params_active_non_embedding),
            "D": float(budget) / counts.M}
