"""Clark et al.'s routed-model law: recovered from its own draws through `scaling fit --from` with an experts
column, the leverage it implies, and a law the data cannot pin declared (the published replication is in
test_fit_reference.py)."""

import numpy as np
import pandas as pd
import pytest

from scaling.fit.inputs import from_csv
from scaling.fit.law import FitError, LawFit
from scaling.fit.report import fit_all
from scaling.fit.routing import CLARK_S_BASE, fit_routing_law, routing_leverage


def _runs(seed: int = 0, sd: float = 0.003) -> pd.DataFrame:
    law = LawFit("truth", "routing", ("N", "E"), CLARK_S_BASE)
    rng = np.random.default_rng(seed)
    rows = []
    for N in (1.5e7, 2.5e7, 5.5e7, 1.3e8, 3.7e8, 1.3e9):
        for E in (1, 2, 8, 32, 128, 512):
            rows.append({"params": N, "tokens": 1.3e11, "experts": E, "group": "dense" if E == 1 else "s-base",
                         "loss": law.value(N=N, E=E) * np.exp(rng.normal(0, sd))})
    return pd.DataFrame(rows)


def test_the_law_is_recovered_through_a_csv_with_an_experts_column(tmp_path):
    path = tmp_path / "routed.csv"
    _runs().to_csv(path, index=False)
    report = fit_all(from_csv(path), n_boot=100, check=False)
    law = report.laws["routing"]
    assert law.formula.startswith("10^(a log10 N")
    for k in ("a", "b", "c", "d"):
        assert law.interval[k][0] <= CLARK_S_BASE[k] <= law.interval[k][1], k
    truth, _ = routing_leverage(LawFit("t", "routing", ("N", "E"), CLARK_S_BASE), 1.3e9, 64)
    el, (lo, hi) = routing_leverage(law, 1.3e9, 64)
    assert lo <= truth <= hi and el == pytest.approx(truth, rel=0.15)
    p = law.predict(N=1.3e9, E=64)  # a loss prediction for any (N, E): every family from one fit
    assert p.interval[0] < p.value < p.interval[1]


def test_too_few_configurations_are_refused_with_the_reason():
    df = _runs()
    small = df[df["experts"].isin([1, 8, 32])]
    with pytest.raises(FitError, match="need at least 8, 3 sizes and 4 expert counts"):
        fit_routing_law(small["params"], small["experts"], small["loss"])
