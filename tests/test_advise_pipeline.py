"""One fit from inputs to files (advise/pipeline.py), as the CLI and notebooks call it."""

import json

import pytest
from synthetic import write_sweep

from scaling.advise.pipeline import FitOptions, fit_sweep, only_sweep
from scaling.fit.inputs import InputError


def test_a_sweep_is_fitted_recommended_and_written_in_one_call(tmp_path):
    write_sweep(tmp_path, "demo", (1e11, 3e11, 1e12), (1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2))
    result = fit_sweep(tmp_path, FitOptions(target_flops=3e12, bootstrap=100, plots=False))
    assert result.sweep == "demo" and "lr_opt" in result.report.laws  # the only sweep, found
    assert result.out_dir == tmp_path / "demo" / "fit"
    fit_json = json.loads(result.written["fit"].read_text())
    assert "lr_opt" in fit_json["laws"] and fit_json["recommendation"]["target_flops"] == 3e12
    assert result.written["overrides"].read_text().startswith(("budget_flops", "model", "data", "train", "seed",
                                                               "#", "sweep"))
    assert result.written["verify"].exists() and result.written["verify_name"]


def test_bad_requests_fail_before_anything_is_written(tmp_path):
    write_sweep(tmp_path, "a", (1e11, 3e11, 1e12), (1e-3, 4e-3, 1.6e-2), seeds=(0,))
    write_sweep(tmp_path, "b", (1e11, 3e11, 1e12), (1e-3, 4e-3, 1.6e-2), seeds=(0,))
    with pytest.raises(InputError, match=r"2 sweeps .*\(a, b\).*--all"):
        fit_sweep(tmp_path, FitOptions(bootstrap=0))
    with pytest.raises(InputError, match="or --all, not both"):
        fit_sweep(tmp_path, FitOptions(sweep="a", all_sweeps=True))
    with pytest.raises(ValueError):
        fit_sweep(tmp_path, FitOptions(sweep="a", optimum="cubic"))
    assert not list(tmp_path.glob("*/fit"))
    assert only_sweep(tmp_path / "empty") is None


def test_too_few_budgets_is_refused_with_what_to_sweep(tmp_path):
    write_sweep(tmp_path, "one", (1e11,), (1e-3, 2e-3), seeds=(0,))
    with pytest.raises(InputError, match="sweep more budgets or learning rates"):
        fit_sweep(tmp_path, FitOptions(bootstrap=0, plots=False))
