"""Tables the commands print: the `runs` table's default columns and order."""

import pandas as pd
import pytest

from scaling.tables import RUNS_COLUMNS, RunsColumnsError, runs_frame


def _records():
    rows = []
    for sweep in ("b", "a"):
        for C in (3e11, 1e11):
            for lr in (4e-3, 1e-3):
                rows.append({"sweep": sweep, "name": f"C{C:.0e}-lr{lr}", "status": "completed", "id": f"{sweep}{C}{lr}",
                             "derived.budget_flops": C, "derived.activation_ratio": 0.25, "derived.granularity": 1.0,
                             "derived.batch_tokens": 2048, "config.train.lr": lr, "config.seed": 0,
                             "results.val_loss": 3.0, "results.tokens_per_s": 5e4, "results.mfu": 0.01,
                             **{f"config.model.k{i}": i for i in range(100)}})  # records are ~100 fields wide
    return pd.DataFrame(rows)


def test_runs_are_sorted_by_sweep_coordinates_with_readable_columns():
    shown = runs_frame(_records(), [])
    assert list(shown.columns) == list(RUNS_COLUMNS)
    assert list(zip(shown["sweep"], shown["C"], shown["lr"], strict=True)) == [
        ("a", 1e11, 1e-3), ("a", 1e11, 4e-3), ("a", 3e11, 1e-3), ("a", 3e11, 4e-3),
        ("b", 1e11, 1e-3), ("b", 1e11, 4e-3), ("b", 3e11, 1e-3), ("b", 3e11, 4e-3)]
    assert len(shown.to_string(index=False).splitlines()[0]) < 140


def test_columns_adds_fields_and_a_typo_names_the_nearest():
    shown = runs_frame(_records(), ["results.mfu"])
    assert list(shown.columns)[-1] == "results.mfu"
    assert len(runs_frame(_records(), ["all"]).columns) > 100
    with pytest.raises(RunsColumnsError, match="did you mean results.mfu"):
        runs_frame(_records(), ["results.mf"])
