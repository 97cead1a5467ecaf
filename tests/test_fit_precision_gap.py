"""The FP8 loss-gap law (scaling/fit/precision_gap.py) on synthetic paired runs drawn from known gaps: recovery,
interval coverage at the nominal rate (neither too narrow nor too wide), false alarms, and the table."""

import numpy as np
import pandas as pd
import pytest

from scaling.config import ModelConfig, RunConfig, TrainConfig, to_dict
from scaling.fit import precision_gap as pg
from scaling.fit.law import FitError
from scaling.fit.report import fit_all

BUDGETS = (1e11, 3e11, 1e12)


def synthetic_runs(gap, budgets=BUDGETS, seeds=(0, 1), qk_norms=(True,), noise=0.0, rng=None,
                   precisions=("bf16", "fp8")) -> pd.DataFrame:
    """Rows as fit/inputs.py makes them from records: a base loss falling with C and the same seed's noise in both
    runs of a pair, FP8 adding gap(C, qk_norm) plus independent pair noise (sd `noise`)."""
    rng = rng or np.random.default_rng(0)
    rows = []
    for qk in qk_norms:
        for C in budgets:
            for seed in seeds:
                base = 5.0 * C**-0.05 + rng.normal(0, 0.02)
                for precision in precisions:
                    cfg = to_dict(RunConfig(budget_flops=C, seed=seed, model=ModelConfig(qk_norm=qk),
                                            train=TrainConfig(precision=precision)))
                    loss = base + (gap(C, qk) + rng.normal(0, noise) if precision == "fp8" else 0.0)
                    arch = "A0.25-G1" if qk else "A0.25-G1-noqknorm"
                    rows.append({"id": f"{qk}-{C:g}-{seed}-{precision}", "config": cfg, "flops": C, "budget": C,
                                 "seed": seed, "loss": loss, "precision": precision, "arch": arch,
                                 "family": f"{arch}-{precision}", "params": 1e5, "tokens": C / 1e6,
                                 "qkv_grad_underflow": (0.0 if qk else 0.05) if precision == "fp8" else None,
                                 "attn_logit_max": 5.0 if qk else 60.0})
    return pd.DataFrame(rows)


def test_pairs_share_everything_but_the_precision():
    df = synthetic_runs(lambda C, qk: 0.01)
    pairs = pg.gap_pairs(df)
    assert len(pairs) == 6 and set(pairs["base"]) == {"bf16"}
    assert np.allclose(pairs["gap"], 0.01)
    assert all(f.replace("fp8", "") == b.replace("bf16", "") for f, b in zip(pairs["fp8_id"], pairs["base_id"],
                                                                             strict=True))
    with_fp32 = pd.concat([df, synthetic_runs(lambda C, qk: 0.5, precisions=("fp32",))], ignore_index=True)
    assert set(pg.gap_pairs(with_fp32)["base"]) == {"bf16"}  # bf16 is preferred where both exist
    only_fp32 = synthetic_runs(lambda C, qk: 0.01, precisions=("fp32", "fp8"))
    assert set(pg.gap_pairs(only_fp32)["base"]) == {"fp32"}


def test_without_pairs_the_reason_names_the_fix():
    with pytest.raises(FitError, match="no runs with train.precision=fp8"):
        pg.gap_pairs(synthetic_runs(lambda C, qk: 0.0, precisions=("bf16",)))
    with pytest.raises(FitError, match=r"sweep train.precision over \[bf16, fp8\]"):
        pg.gap_pairs(synthetic_runs(lambda C, qk: 0.0, precisions=("fp8",)))


@pytest.mark.parametrize("n", [4, 6])
def test_the_mean_gap_interval_covers_the_true_gap_at_its_nominal_rate(n):
    """Student-t with n - 1 dof: a normal-quantile interval would cover ~0.89 (n = 4) and ~0.92 (n = 6), one
    twice as wide ~1.0; the bounds reject both (2000 draws: the rate's sd is 0.005)."""
    rng = np.random.default_rng(1)
    truth, hits = 0.004, 0
    for _ in range(2000):
        _, (lo, hi) = pg.mean_interval(truth + rng.normal(0, 0.01, n))
        hits += lo <= truth <= hi
    assert 0.935 <= hits / 2000 <= 0.965


def test_no_gap_is_called_significant_at_about_the_test_level():
    rng = np.random.default_rng(2)
    pairs = pg.gap_pairs(synthetic_runs(lambda C, qk: 0.0))
    alarms = 0
    for _ in range(2000):
        pairs["gap"] = rng.normal(0, 0.01, len(pairs))
        row, law = pg.summarize("c", pairs)
        alarms += row["verdict"] != "no significant gap"
    assert 0.04 <= alarms / 2000 <= 0.06


def test_a_gap_law_recovers_its_exponent_and_its_interval_covers_it_at_the_nominal_rate():
    """gap = a C^b with multiplicative noise (each pair's gap off by ~10%): b recovered, and b's 95% interval
    covers the truth 93-97% of the time over 600 synthetic studies (3 budgets x 2 seeds)."""
    rng = np.random.default_rng(3)
    b_true, a_true = 0.3, 0.02 * 1e11**-0.3
    pairs = pg.gap_pairs(synthetic_runs(lambda C, qk: a_true * C**b_true))
    truth = pairs["gap"].to_numpy()
    estimates, hits = [], 0
    for _ in range(600):
        pairs["gap"] = truth * np.exp(rng.normal(0, 0.1, len(pairs)))
        law = pg.gap_law("g", pairs, 1.0)
        estimates.append(law.params["b"])
        lo, hi = law.interval["b"]
        hits += lo <= b_true <= hi
    assert abs(np.median(estimates) - b_true) < 0.02
    assert 0.93 <= hits / 600 <= 0.97


def test_the_table_tells_a_growing_gap_from_none_and_the_laws_join_the_report(tmp_path):
    rng = np.random.default_rng(4)

    def gap(C, qk):  # QK-norm off: FP8 loses 0.02 nats at 1e11, growing as C^0.5; QK-norm on: nothing
        return 0.0 if qk else 0.02 * (C / 1e11) ** 0.5

    df = synthetic_runs(gap, qk_norms=(True, False), noise=0.002, rng=rng)
    table, pairs, laws = pg.precision_gaps(df)
    by = table.set_index("configuration")
    on, off = by.loc["A0.25-G1, tensorwise"], by.loc["A0.25-G1-noqknorm, tensorwise"]
    assert on["verdict"] == "no significant gap" and pd.isna(on["law"]) and "less than" in on["reading"]
    assert off["verdict"] == "fp8 worse" and off["law"] == "fp8_gap[A0.25-G1-noqknorm, tensorwise]"
    assert off["b_lo"] > 0 and "grows with compute" in off["reading"]
    assert off["qkv_grad_underflow"] == pytest.approx(0.05) and on["qkv_grad_underflow"] == 0.0
    law = laws[off["law"]]
    assert law.value(C=3e11) == pytest.approx(gap(3e11, False), rel=0.15)

    from scaling.fit.inputs import Runs

    report = fit_all(Runs(df=df, source="synthetic"), n_boot=0, check=False)
    assert off["law"] in report.laws and report.laws[off["law"]].verdict is not None
    assert list(report.precision["configuration"]) == list(table["configuration"])
    assert report.as_json()["precision"][0]["configuration"] == "A0.25-G1, tensorwise"
    from scaling.fit.plots import plot_precision_gap

    written = plot_precision_gap(report, tmp_path)
    assert sorted(p.name for p in written) == ["precision_gap.png", "precision_gap.svg"]
    assert all(p.stat().st_size > 1000 for p in written)


def test_fp8_better_throughout_gets_the_law_of_the_other_sign():
    df = synthetic_runs(lambda C, qk: -0.01 * (C / 1e11) ** -0.2, noise=0.0005)
    row, law = pg.summarize("c", pg.gap_pairs(df))
    assert row["verdict"] == "fp8 better" and law.params["b"] == pytest.approx(-0.2, abs=0.05)
    assert "base - fp8" in law.notes[0]


def test_one_pair_or_two_budgets_give_no_law_and_say_why():
    one = pg.gap_pairs(synthetic_runs(lambda C, qk: 0.01, budgets=(1e11,), seeds=(0,)))
    row, law = pg.summarize("c", one)
    assert law is None and row["verdict"] == "undetermined" and "one pair" in row["reading"]
    two = pg.gap_pairs(synthetic_runs(lambda C, qk: 0.01, budgets=(1e11, 3e11), noise=0.001))
    row, law = pg.summarize("c", two)
    assert law is None and row["verdict"] == "fp8 worse" and "a law needs 3" in row["reading"]
