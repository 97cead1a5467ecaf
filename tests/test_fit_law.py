"""Laws as objects: one evaluator per kind, predictions with intervals that survive fit.json, nothing evaluated
from text."""

import json

import numpy as np
import pytest

from scaling.fit.law import FitError, LawFit, laws_from_json
from scaling.fit.powerlaw import fit_power_law


def lr_law():
    rng = np.random.default_rng(0)
    C = np.logspace(11, 12, 6)
    return fit_power_law("lr_opt", {"C": C}, 5.07 * C**-0.26 * np.exp(rng.normal(0, 0.05, 6)))


def test_a_law_read_back_from_fit_json_predicts_the_same_with_its_interval():
    law = lr_law()
    back = laws_from_json(json.loads(json.dumps({"laws": {"lr_opt": law.as_dict()}})))["lr_opt"]
    assert back.kind == "power" and back.variables == ("C",) and back.formula == "a * C^b"
    p, q = law.predict(C=3e12), back.predict(C=3e12)
    assert q.value == pytest.approx(p.value, rel=1e-12)
    assert q.interval == pytest.approx(p.interval, rel=0.1)  # 200 kept resamples of 2000
    assert back.fitted_range == law.fitted_range and back.extrapolation(C=3e12) == pytest.approx(3, rel=0.01)
    assert back.inverse(back.value(C=5e11)) == pytest.approx(5e11, rel=1e-9)


def test_every_kind_evaluates_its_formula():
    cases = [
        ("power", ("N", "D"), {"a": 2.0, "b": -0.5, "c": 0.25}, {"N": 4.0, "D": 16.0}, 2.0 * 0.5 * 2.0),
        ("saturating", ("C",), {"E": 1.5, "A": 10.0, "alpha": 0.5}, {"C": 100.0}, 2.5),
        ("chinchilla", ("N", "D"), {"E": 1.0, "A": 4.0, "B": 9.0, "alpha": 0.5, "beta": 0.5}, {"N": 4.0, "D": 9.0},
         1.0 + 4.0 / 2 + 9.0 / 3),
        ("el_granularity", ("G",), {"c0": 0.0, "c1": 1.0, "c2": -0.5}, {"G": np.e}, np.exp(0.5)),
    ]
    for kind, variables, params, at, expected in cases:
        assert LawFit("x", kind, variables, params).value(**at) == pytest.approx(expected)


def test_old_and_hand_written_law_files_are_read_without_evaluating_text():
    laws = laws_from_json({"laws": {"lr_opt": {"formula": "a * C^b", "params": {"a": 1.0, "b": -0.25}},
                                    "batch_opt": {"params": {"a": 0.01, "b": 0.5}},
                                    "loss_vs_compute": {"formula": "E + A * C^-alpha",
                                                        "params": {"E": 1.0, "A": 10.0, "alpha": 0.5}}}})
    assert laws["lr_opt"].value(C=1e4) == pytest.approx(0.1)
    assert laws["batch_opt"].value(C=1e4) == pytest.approx(1.0)
    assert laws["loss_vs_compute"].value(C=100.0) == pytest.approx(2.0)
    assert laws["lr_opt"].predict(C=1e4).interval is None  # no resamples: no interval, said by None
    with pytest.raises(FitError, match="unknown formula"):
        laws_from_json({"laws": {"x": {"formula": "__import__('os').system('true')", "params": {"a": 1.0}}}})
    with pytest.raises(FitError, match="must be numbers"):
        laws_from_json({"laws": {"x": {"kind": "power", "variables": ["C"], "params": {"a": "1e0+1", "b": 1}}}})


def test_a_power_law_overflowing_python_floats_is_inf_not_an_error():
    from scaling.fit.law import LawFit

    law = LawFit("lr_opt_nd", "power", ("N", "D"), {"a": 1.0, "b": 400.0, "c": -1.0})
    assert law.value(N=1e6, D=1e9) == float("inf")


def test_a_hand_edited_law_is_refused_in_one_line_naming_what_is_wrong():
    """Issue 31: a NaN parameter, `variables: 123`, an unknown kind, a string verdict and a loss law without A
    each ended in a traceback."""
    import pytest

    from scaling.fit.law import FitError, LawFit

    good = {"kind": "saturating", "variables": ["C"], "params": {"E": 1.0, "A": 10.0, "alpha": 0.3}}
    assert LawFit.from_dict("loss_vs_compute", good).value(C=1e12) > 1
    for edit, message in (({"params": {"E": 1.0, "A": float("nan"), "alpha": 0.3}}, "must be finite numbers"),
                          ({"variables": 123}, "variables 123 must be a list"),
                          ({"kind": "cubic"}, "unknown kind 'cubic'"),
                          ({"verdict": "reliable"}, "verdict must be an object"),
                          ({"params": {"E": 1.0, "alpha": 0.3}}, "needs parameter\\(s\\) A")):
        with pytest.raises(FitError, match=message):
            LawFit.from_dict("loss_vs_compute", {**good, **edit})


def test_a_law_whose_prediction_is_not_a_positive_finite_number_is_refused():
    """Issue 31: a = -1 made `fit --check` print "lr predicted -0.0878 ... (x-0.11 apart)"; a = 1e308 predicted inf.
    Every quantity a law here predicts is positive: refused at read, naming the value and where."""
    import pytest

    from scaling.fit.law import FitError, LawFit

    lr = {"kind": "power", "variables": ["C"], "params": {"a": 0.3, "b": -0.12}, "fitted_range": {"C": [1e15, 1e18]}}
    assert LawFit.from_dict("lr_opt", lr).value(C=1e16) > 0
    with pytest.raises(FitError, match=r"prefactor a must be positive \(got a=-1\)"):
        LawFit.from_dict("lr_opt", {**lr, "params": {"a": -1.0, "b": -0.12}})
    with pytest.raises(FitError, match=r"law 'lr_opt' predicts inf at C=1e\+15 \(its fitted range\)"):
        LawFit.from_dict("lr_opt", {**lr, "params": {"a": 1e308, "b": 0.5}})
    loss = {"kind": "saturating", "variables": ["C"], "params": {"E": -5.0, "A": 10.0, "alpha": 0.3},
            "fitted_range": {"C": [1e15, 1e18]}}
    with pytest.raises(FitError, match=r"law 'loss_vs_compute' predicts -5 at C=1e\+15"):
        LawFit.from_dict("loss_vs_compute", loss)
    with pytest.raises(FitError, match="fitted_range must hold"):
        LawFit.from_dict("lr_opt", {**lr, "fitted_range": {"C": ["low", "high"]}})
