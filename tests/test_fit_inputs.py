"""Fit inputs: records of the store and CSV rows become one table of runs; what cannot be used is counted and
named, never fitted."""

import pytest
from synthetic import write_sweep

from scaling.fit.inputs import InputError, from_csv, from_store, load_runs, parse_map


def test_map_items_must_be_name_equals_column():
    assert parse_map("params=Model Size, flops=Training FLOP") == {"Model Size": "params", "Training FLOP": "flops"}
    assert parse_map(None) == {}
    with pytest.raises(InputError, match="is not NAME=COLUMN"):
        parse_map("params")


def test_a_map_name_we_do_not_read_is_refused_with_the_nearest_one():
    with pytest.raises(InputError, match="'lrr' is not a column scaling reads \\(did you mean 'lr'\\?"):
        parse_map("lrr=peak_lr")
    with pytest.raises(InputError, match="mapped twice"):
        parse_map("lr=peak_lr,lr=max_lr")
    assert parse_map("seed=run_seed,budget=nominal") == {"run_seed": "seed", "nominal": "budget"}


def _csv(tmp_path, text: str):
    path = tmp_path / "runs.csv"
    path.write_text(text)
    return path


def test_a_csv_is_mapped_completed_and_its_bad_rows_counted(tmp_path):
    path = _csv(tmp_path, "Model Size,FLOP,loss,lr\n1e6,6e12,3.1,1e-3\n1e6,6e12,abc,1e-3\n2e6,1.2e13,-1,1e-3\n"
                          "2e6,1.2e13,2.9,0\n4e6,2.4e13,2.7,2e-3\n")
    runs = from_csv(path, parse_map("params=Model Size,flops=FLOP"))
    assert len(runs.df) == 2 and list(runs.df["loss"]) == [3.1, 2.7]
    assert runs.excluded == {"loss not a finite number": 1, "loss not positive": 1, "lr not positive": 1}
    assert runs.df["tokens"].iloc[0] == pytest.approx(6e12 / 6e6)  # derived, and said so
    assert any("tokens = flops / (6 * params)" in n for n in runs.notes)


def test_a_csv_without_what_a_fit_needs_names_the_columns_and_the_fix(tmp_path):
    with pytest.raises(InputError, match=r"missing column\(s\) params.*--map"):
        from_csv(_csv(tmp_path, "size,loss\n1,2\n"))
    with pytest.raises(InputError, match="not found"):
        from_csv(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="give --seq-len"):
        from_csv(_csv(tmp_path, "params,tokens,loss,lr,batch\n1e6,1e9,3,1e-3,8\n"))
    assert from_csv(_csv(tmp_path, "params,tokens,loss,lr,batch\n1e6,1e9,3,1e-3,8\n"),
                    seq_len=256).df["batch_tokens"].iloc[0] == 2048


def test_store_records_become_runs_of_one_family(tmp_path):
    write_sweep(tmp_path, "s", (1e11, 3e11), (1e-3, 2e-3), seeds=(0,))
    runs = from_store(tmp_path, "s")
    assert len(runs.df) == 4 and set(runs.df["family"]) == {"A0.25-G1"}
    assert sorted(runs.df["budget"].unique()) == [1e11, 3e11]
    with pytest.raises(InputError):
        load_runs(None, tmp_path, "no-such-sweep")


def _jittered_log(tmp_path, jitter: float = 0.005, budget_column: bool = False):
    """A trainer's log: 4 budgets x 5 lrs x 2 seeds, each run's tokens and FLOPs what it saw (+-jitter of nominal),
    the loss from tests/synthetic's lr law."""
    import numpy as np
    from synthetic import A_LR, B_LR

    rng = np.random.default_rng(0)
    rows = ["n_params,tokens_seen,train_flops,val_loss,peak_lr,run_seed" + (",nominal" if budget_column else "")]
    for C in (1e17, 3e17, 1e18, 3e18):
        N = 1e7 * (C / 1e17) ** 0.5
        lr_star = A_LR * C**B_LR
        for lr in lr_star * 2.0 ** np.arange(-2, 3):
            for seed in (0, 1):
                D = C / (6 * N) * (1 + rng.uniform(-jitter, jitter))
                loss = 2.0 + 20 * C**-0.08 + 0.12 * np.log(lr / lr_star) ** 2 + rng.normal(0, 0.01)
                rows.append(f"{N:.6g},{D:.8g},{6 * N * D:.8g},{loss:.6f},{lr:.6g},s{seed}"
                            + (f",{C:g}" if budget_column else ""))
    return _csv(tmp_path, "\n".join(rows) + "\n")


MAP = "params=n_params,tokens=tokens_seen,flops=train_flops,loss=val_loss,lr=peak_lr,seed=run_seed"


@pytest.mark.parametrize("budget_column", [False, True])
def test_a_trainers_jittered_log_fits_one_bowl_per_budget_and_recovers_its_lr_law(tmp_path, budget_column):
    """Tokens and FLOPs 0.5% off nominal per run (as a trainer logs them): 4 bowls, not 40 one-run budgets, by the
    budget column when mapped, else by FLOPs within 2%; and the lr law's truth inside its interval."""
    from synthetic import B_LR

    from scaling.fit.report import fit_all

    path = _jittered_log(tmp_path, budget_column=budget_column)
    runs = from_csv(path, parse_map(MAP + (",budget=nominal" if budget_column else "")))
    how = "by the budget column" if budget_column else "by FLOPs within 0.02"
    assert any(n.startswith(f"runs grouped into 4 budget(s) {how}") for n in runs.notes), runs.notes
    assert sorted(runs.df["seed"].unique()) == [0, 1]
    report = fit_all(runs, n_boot=200, check=False, only=("lr_opt",))
    assert len(report.optima) == 4 and (report.optima["n_runs"] == 10).all()
    lo, hi = report.laws["lr_opt"].interval["b"]
    assert lo <= B_LR <= hi, (lo, hi)


def test_budgets_further_apart_than_the_tolerance_stay_apart(tmp_path):
    path = _csv(tmp_path, "params,flops,loss\n1e6,1e12,3\n1e6,1.015e12,3\n1e6,1.05e12,3\n")
    assert from_csv(path).df["budget"].nunique() == 2
    assert from_csv(path, budget_tolerance=0.1).df["budget"].nunique() == 1
    with pytest.raises(InputError, match="--budget-tolerance"):
        from_csv(path, budget_tolerance=-1)


def test_total_parameters_given_for_an_moe_are_noted(tmp_path):
    path = _csv(tmp_path, "params,tokens,flops,loss\n5e6,1e9,6e15,3\n1e7,1e9,1.2e16,2.9\n")
    assert any("is params the active" in n for n in from_csv(path).notes)


def test_the_readme_states_the_csv_contract_column_for_column():
    from pathlib import Path

    from scaling.fit.columns import CSV_COLUMNS

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| `")]
    table = {line.split("`")[1]: line.split("|")[2].strip() for line in rows if line.split("`")[1] in CSV_COLUMNS}
    assert table == CSV_COLUMNS


def test_a_ladder_at_fixed_tokens_per_parameter_refuses_lr_opt_nd_in_one_line_and_fits_the_rest(tmp_path):
    """It ran 2 minutes and ended in OverflowError from fit/law.py while judging lr_opt_nd."""
    import numpy as np
    from synthetic import A_LR, B_LR

    from scaling.fit.report import fit_all

    rng = np.random.default_rng(1)
    rows = ["params,tokens,loss,lr"]
    for N in (1e6, 3e6, 1e7, 3e7):
        C = 6 * N * 20 * N
        for lr in A_LR * C**B_LR * 2.0 ** np.arange(-2, 3):
            D = 20 * N * (1 + rng.uniform(-0.003, 0.003))
            rows.append(f"{N:g},{D:.8g},{2 + 30 * C**-0.1 + 0.12 * np.log(lr / (A_LR * C**B_LR)) ** 2:.6f},{lr:.6g}")
    report = fit_all(from_csv(_csv(tmp_path, "\n".join(rows) + "\n")), n_boot=100, check=False)
    assert "lr_opt" in report.laws and "lr_opt_n" in report.laws
    why = report.excluded["lr_opt_nd"]
    assert "\n" not in why and "moved with" in why and "vary them independently" in why


def test_records_that_lie_are_excluded_with_a_counted_reason_naming_the_file(tmp_path):
    """A completed record with val_loss -1 was fitted silently (the lr law's prefactor moved 0.260 -> 0.619);
    tokens "abc", flops_per_token 5 or no n_experts ended `scaling fit` in a TypeError/KeyError traceback."""
    import json

    from scaling.fit.report import fit_all

    recs = write_sweep(tmp_path, "s", (1e11, 3e11, 1e12), (1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2), seeds=(0,))
    edits = [lambda r: r["results"].update(val_loss=-1), lambda r: r["derived"].update(tokens="abc"),
             lambda r: r["derived"].update(flops_per_token=5), lambda r: r["config"]["model"].update(n_experts="8")]
    for rec, edit in zip([recs[0], recs[1], recs[5], recs[10]], edits, strict=True):
        path = tmp_path / "s" / "runs" / f"{rec['id']}.json"
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))
    runs = from_store(tmp_path, "s")
    assert runs.excluded == {"invalid record": 4} and len(runs.df) == len(recs) - 4
    skipped = [n for n in runs.notes if n.startswith("skipped: ")]
    assert len(skipped) == 4 and all("/s/runs/" in n and "not fitted" in n for n in skipped)
    assert any("results.val_loss -1 is not a positive number" in n for n in skipped)
    assert any("config.model.n_experts '8' is not a whole number" in n for n in skipped)
    assert "lr_opt" in fit_all(runs, n_boot=50, check=False, only=("lr_opt",)).laws
