"""The one reader of a fit's JSON: its laws, their convention, and a named error for a bad file."""

import json

import pytest

from scaling.advise.fitfile import read_fit
from scaling.compose import search_path
from scaling.fit.law import FitError


def _write(path, payload):
    path.write_text(json.dumps(payload))
    return path


def test_the_laws_and_their_convention_are_read(tmp_path):
    law = {"kind": "power", "variables": ["C"], "params": {"a": 2.0, "b": -0.25}}
    fit = read_fit(_write(tmp_path / "fit.json", {"convention": "6N_total", "laws": {"lr_opt": law}}))
    assert fit.convention == "6N_total" and fit.power_law("lr_opt").value(C=1e4) == pytest.approx(0.2)
    with pytest.raises(FitError, match="no usable 'batch_opt' law"):
        fit.power_law("batch_opt")


def test_a_file_without_a_run_convention_is_read_in_the_trainers(tmp_path):
    """Published laws carry no convention, a CSV fit says 'as given (CSV)': both read as M."""
    for convention in (None, "as given (CSV)"):
        payload = {"laws": {}, **({"convention": convention} if convention else {})}
        assert read_fit(_write(tmp_path / "f.json", payload)).convention == "M"
    ling = read_fit("published/ling_moe.json", search_path())
    assert ling.convention == "M" and ling.power_law("m_opt").params["b"] == pytest.approx(0.5095)


def test_a_missing_or_corrupt_law_file_is_named(tmp_path):
    with pytest.raises(FitError, match="not found"):
        read_fit(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(FitError, match="bad.json is not readable JSON"):
        read_fit(tmp_path / "bad.json")
    with pytest.raises(FitError, match="no 'laws'"):
        read_fit(_write(tmp_path / "list.json", [1, 2]))
