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


def _widest(text: str) -> int:
    """The widest line of the tables and their notes (a message keeps its line: a terminal wraps it)."""
    import re

    table = re.compile(r"^\s*(\(\d+\)|[┃│┏┗┡└╭╰|])")
    return max(len(line.rstrip()) for line in text.splitlines() if table.match(line))


def test_fit_and_plan_tables_fit_100_columns_with_notes_below_and_wide_shows_all(tmp_path):
    """Issue 26: the fit and plan tables were 200+ columns; at COLUMNS=100 they keep within it (long reasons as
    numbered notes below the table, every cell name whole), and --wide puts everything back."""
    from synthetic import write_sweep

    from scaling.sweep.plan import compose_sweep, plan_sweep
    from tests.inprocess import scaling

    write_sweep(tmp_path, "demo", budgets=(1e11, 3e11, 1e12), lrs=(1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2))
    env = {"COLUMNS": "100"}
    fit = scaling("fit", "demo", "--results-dir", tmp_path, "--target-flops", "3e12", "--no-plots",
                  "--bootstrap", "100", env=env)
    assert fit.returncode == 0, fit.stderr
    assert _widest(fit.stdout) <= 100 and "(1) lr_opt: a=" in fit.stdout and "not fitted" in fit.stdout
    wide = scaling("fit", "demo", "--results-dir", tmp_path, "--target-flops", "3e12", "--no-plots",
                   "--bootstrap", "100", "--wide", env=env)
    assert "parameters (95% interval)" in wide.stdout and _widest(wide.stdout) > 100

    plan = scaling("sweep", "demo", "--dry-run", "--no-probe", env=env)
    assert plan.returncode == 0 and _widest(plan.stdout) <= 100
    names = [c.name for c in plan_sweep(compose_sweep("demo"), data_required=False).cells]
    assert all(name in plan.stdout for name in names)  # whole, not cut
    assert plan_sweep(compose_sweep("demo"), data_required=False).cells[0].run_id not in plan.stdout
    wide_plan = scaling("sweep", "demo", "--dry-run", "--no-probe", "--wide", env=env)
    assert names[0] in wide_plan.stdout and "memory/device" in wide_plan.stdout


def test_a_plan_of_more_cells_than_a_table_holds_is_shown_one_row_per_budget():
    """Issue 31: a 10,000-cell dry run drew 10,000 rows (seconds of rendering, read by no one). Above
    TABLE_CELLS cells the plan is one row per budget, its cells counted; --format csv lists them all."""
    from pathlib import Path

    from rich.console import Console

    from scaling import tables
    from scaling.sweep.plan import compose_sweep, plan_sweep

    lrs = ",".join(f"{1e-4 * 1.05 ** i:.4g}" for i in range(101))
    plan = plan_sweep(compose_sweep(str(Path(__file__).parent / "sweeps" / "tiny.yaml"), [f"lr.values=[{lrs}]"]))
    assert len(plan.cells) == 202 > tables.TABLE_CELLS
    console = Console(width=200, record=True)
    console.print(tables.sweep_table(plan, {}))
    text = console.export_text()
    rows = [line for line in text.splitlines() if line.startswith("│")]
    assert "one row per budget; `--format csv` lists every cell" in " ".join(text.split())
    assert [[c.strip() for c in r.split("│")[1:3]] for r in rows] == [["2e+09", "101"], ["4e+09", "101"]]
