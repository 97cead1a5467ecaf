"""The recommendation at a target budget: only what a usable law supports, with its interval, as overrides
`scaling train` reads."""

import pandas as pd
import pytest
from synthetic import A_LR, B_LR, synthetic_sweep

from scaling.advise.family import config_overrides, largest_run
from scaling.advise.recommend import recommend
from scaling.fit.report import fit_all


def test_the_old_demo_design_is_judged_undetermined_and_writes_no_lr():
    """Issue 11's old demo: 4 budgets over 5x (1e11-5e11), one seed, recommended at 5e13. The lr law is judged
    undetermined, with its reasons, and the recommendation lists lr as missing (no train.lr override)."""
    undetermined = 0
    for seed in range(10):
        runs = synthetic_sweep(seed, budgets=(1e11, 2e11, 3e11, 5e11), seeds=1, sigma=(0.03, 0.05))
        report = fit_all(runs, n_boot=500, target_flops=5e13, check=False, only=("lr_opt",))
        verdict = report.laws["lr_opt"].verdict
        rec = recommend(report, runs.df, 5e13)
        if verdict["verdict"] == "undetermined":
            undetermined += 1
            assert "lr" in rec.missing and "lr_opt is undetermined" in rec.missing["lr"]["why"]
            assert not any(line.startswith("train.lr=") for line in rec.overrides)
            assert any("span 5x" in r for r in verdict["reasons"]) and any("add a budget above" in a
                                                                            for a in verdict["advice"])
            assert any("100x beyond the fitted range, which spans 5x" in r for r in verdict["reasons"])
    assert undetermined >= 9


def test_a_reliable_lr_law_recommends_its_prediction_with_an_interval_holding_the_truth():
    runs = synthetic_sweep(3, sigma=(0.01, 0.01))
    report = fit_all(runs, n_boot=500, target_flops=3e12, check=False, only=("lr_opt",))
    rec = recommend(report, runs.df, 3e12)
    lr = rec.items["lr"]
    lo, hi = lr["interval"]
    assert lo < lr["value"] < hi and lo <= A_LR * 3e12**B_LR <= hi
    assert rec.overrides == []  # runs without a config (a CSV): overrides would train the default model
    assert any(line.startswith(f"lr: {lr['value']:.6g}  # 95% [") for line in rec.values("M"))
    assert rec.as_dict()["items"]["lr"]["value"] == lr["value"]


def test_a_bad_target_is_refused():
    runs = synthetic_sweep(0)
    report = fit_all(runs, n_boot=0, check=False, only=("lr_opt",))
    with pytest.raises(ValueError, match="must be a positive number of FLOPs"):
        recommend(report, runs.df, -1.0)


def test_the_family_config_comes_from_its_largest_run():
    fam = pd.DataFrame([{"budget": 1e11, "flops": 1e11, "flops_M": 1e11, "config": None},
                        {"budget": 1e12, "flops": 2e12, "flops_M": 1e12,
                         "config": {"model": {"d_model": 96}, "train": {"lr": 1e-3, "batch_size": 8}}}])
    row = largest_run(fam)
    assert row["budget"] == 1e12 and largest_run(fam.iloc[:0]) is None
    assert config_overrides(None) is None and config_overrides(fam.iloc[0]) is None
    overrides = config_overrides(row)
    assert "model.d_model=96" in overrides and not any(o.startswith(("train.lr=", "train.batch_size="))
                                                       for o in overrides)


def test_a_law_measured_at_one_size_is_refused_for_a_run_of_another():
    """The lr law of a sweep whose C moved only through D (one model size): at a recommended size 10x larger, the
    lr is refused with the reason; at the swept size it is given."""
    from scaling.advise.recommend import Recommendation, _refuse_other_sizes

    runs = synthetic_sweep(3, sigma=(0.01, 0.01))
    report = fit_all(runs, n_boot=200, target_flops=3e12, check=False, only=("lr_opt",))
    N = float(runs.df["params"].iloc[0])
    for size, refused in ((10 * N, True), (N, False)):
        rec = Recommendation(target_flops=3e12, items={"lr": {"value": 1e-3}, "params_active": {"value": size}})
        _refuse_other_sizes(rec, report.laws)
        assert ("lr" in rec.missing) == refused and ("lr" in rec.items) != refused
        if refused:
            assert "lr_opt was measured at N = 1.3e+05 alone" in rec.missing["lr"]["why"]


def test_a_missing_lr_is_a_marked_line_that_scaling_train_refuses_until_given(tmp_path):
    """Runs with their config (a sweep of this tool) at two budgets (no lr law): the overrides file trains the
    swept model, but says train.lr is missing, and `scaling train` refuses it (it would otherwise train at the
    default lr) until train.lr is given on the command line."""
    from synthetic import write_sweep

    from scaling.advise.recommend import missing_settings
    from scaling.fit.inputs import from_store
    from tests.inprocess import scaling

    write_sweep(tmp_path, "s", (1e11, 2e11), (1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2))
    runs = from_store(tmp_path, "s")
    report = fit_all(runs, n_boot=200, target_flops=1e12, check=False, only=("lr_opt",))
    assert "lr_opt" not in report.laws
    rec = recommend(report, runs.df, 1e12)
    assert "lr" in rec.missing and missing_settings(rec.overrides) == ["train.lr"]
    assert not any(line.startswith("train.lr=") for line in rec.overrides)
    path = tmp_path / "recommended.overrides"
    path.write_text("\n".join(rec.overrides) + "\n")
    refused = scaling("train", "--dry-run", "--overrides-file", path)
    assert refused.returncode == 2 and "has no train.lr" in refused.stderr and "give train.lr=VALUE" in refused.stderr
    given = scaling("train", "--dry-run", "--overrides-file", path, "train.lr=0.002")
    assert given.returncode == 0, given.stderr


def test_no_path_shows_an_undetermined_value():
    """An allocation from L(N, D) whose fit is judged undetermined was shown as a value with the verdict
    'undetermined' beside it (`params_active 36.25 undetermined` from a CSV): it is listed as missing instead."""
    import numpy as np

    from scaling.fit.inputs import Runs

    N, D = np.meshgrid(np.geomspace(1e6, 1e8, 4), np.geomspace(1e8, 1e10, 4))
    N, D = N.ravel(), D.ravel()
    loss = 1.7 + 400 / N**0.34 + 410 / D**0.28
    df = pd.DataFrame({"params": N, "tokens": D, "flops": 6 * N * D, "budget": 6 * N * D, "loss": loss,
                       "family": "all"})
    report = fit_all(Runs(df=df, source="t"), n_boot=0, check=False, only=("chinchilla",))
    report.laws["chinchilla"].verdict = {"verdict": "undetermined", "reasons": ["judged so"], "advice": []}
    rec = recommend(report, df, 1e21)
    assert {"params_active", "tokens"} <= set(rec.missing) and "params_active" not in rec.items
    assert not any(it.get("verdict") == "undetermined" for it in rec.items.values())
