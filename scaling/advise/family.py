"""The swept family a run is advised from: its run at the largest budget (the model, data and optimisation a
recommendation or a verification sweep scales up), that run's config as overrides, and its model."""

from __future__ import annotations

import pandas as pd

from scaling.config import ModelConfig

SET_BY_RECOMMENDATION = ("train.lr", "train.batch_size")
"""Keys a recommendation (or a verification sweep) sets itself; every other key is the swept family's own."""


def largest_run(fam: pd.DataFrame) -> pd.Series | None:
    """The family's run at its largest budget; None for no runs."""
    return fam.sort_values("budget").iloc[-1] if len(fam) else None


def has_config(row: pd.Series | None) -> bool:
    """Whether the run came with its resolved config (the results store) rather than alone (a CSV, W&B)."""
    return row is not None and isinstance(row.get("config"), dict)


def config_overrides(row: pd.Series | None) -> list[str] | None:
    """The run's whole model, data and optimisation config as overrides (lr and batch left to the caller); None
    when the runs came without configs."""
    from scaling.config import identity_overrides

    return identity_overrides(row["config"], skip=SET_BY_RECOMMENDATION) if has_config(row) else None


def family_model(row: pd.Series | None) -> ModelConfig | None:
    """The run's model; None without a config."""
    return ModelConfig(**row["config"]["model"]) if has_config(row) else None


def swept_seeds(fam: pd.DataFrame) -> list[int]:
    """The seeds the family was swept with ([0] when none is recorded)."""
    return sorted(int(s) for s in fam["seed"].dropna().unique()) or [0]


def family_sweep(row: pd.Series) -> dict:
    """The part of a sweep config that trains the family's own run (its config, at its batch): `base` and
    `batch`; the caller adds budgets, learning rates and seeds."""
    model, batch = family_model(row), int(round(row["batch_tokens"]))
    return {"base": config_overrides(row) + [f"train.batch_size={max(1, batch // model.seq_len)}"],
            "batch": {"values": [batch]}}
