"""Sweeps built on a fit: law-centred grids and ladder rungs, converted between the fit's C and the cells'
budget_flops for the cells' own model; and every way back from a fit agrees on the same run."""

import json

import pytest
from synthetic import write_sweep

from scaling.advise.grids import compute_optimal_budget, law_centre
from scaling.advise.pipeline import FitOptions, fit_sweep
from scaling.compose import compose
from scaling.config import ConfigError, ModelConfig
from scaling.flops import count
from scaling.sweep.plan import GridAxis, SweepConfig, plan_sweep

LRS = (1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2)


def _overrides(path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_recommendation_grid_ladder_and_verify_agree_on_one_run_in_another_convention(tmp_path):
    """A fit in the 6N_total convention (2.2x M for this model), asked for C = 3e12: the recommendation, a sweep
    whose lr axis is centred on that fit at the recommended budget, a ladder rung of the same model, and verify.yaml
    all train the same run (before issue 26 the grid centred on the lr at C = budget_flops, 1.26x away)."""
    results = tmp_path / "r"
    write_sweep(results, "conv", budgets=(1e11, 3e11, 1e12), lrs=LRS, noise=0.01)
    target = 3e12
    result = fit_sweep(results, FitOptions(sweep="conv", convention="6N_total", target_flops=target, bootstrap=200,
                                           plots=False, verify_at=target))
    fit_json = result.written["fit"]
    rec = _overrides(result.written["overrides"])
    budget, lr = float(rec["budget_flops"]), float(rec["train.lr"])
    model = compose([]).model
    counts = count(model)
    assert budget == pytest.approx(target * counts.M / counts.flops_per_token["6N_total"], rel=1e-5)
    assert lr == pytest.approx(result.report.laws["lr_opt"].value(C=target), rel=1e-5)

    base = [f"{k}={v}" for k, v in rec.items() if k not in ("budget_flops", "train.lr")]
    grid = plan_sweep(SweepConfig(name="grid", base=base, budgets=[budget], lr=GridAxis(law=str(fit_json))),
                      data_required=False)
    assert grid.cells[0].run.train.lr == pytest.approx(lr, rel=1e-5)

    payload = json.loads(fit_json.read_text())
    N = counts.params_active_non_embedding
    payload["laws"]["n_opt"] = {"kind": "power", "variables": ["C"], "params": {"a": N / target**0.5, "b": 0.5}}
    (tmp_path / "with_n_opt.json").write_text(json.dumps(payload))
    ladder = plan_sweep(SweepConfig(name="rungs", base=base, ladder=[{"d_model": model.d_model}],
                                    laws=str(tmp_path / "with_n_opt.json"),
                                    lr=GridAxis(law=str(tmp_path / "with_n_opt.json"))),
                        data_required=False)
    assert ladder.cells[0].run.budget_flops == pytest.approx(budget, rel=2e-3)  # 3 significant digits
    assert ladder.cells[0].run.train.lr == pytest.approx(lr, rel=2e-3)

    verify = result.written["payload"]["verification"]
    assert verify["budgets"] == [pytest.approx(budget, rel=1e-3)]
    assert pytest.approx(lr, rel=1e-3) in verify["lr"]["values"]


def test_a_law_centre_needs_a_usable_law(tmp_path):
    (tmp_path / "f.json").write_text(json.dumps({"laws": {"lr_opt": {"formula": "E + A * C^-alpha",
                                                                     "params": {"E": 1, "A": 1, "alpha": 1}}}}))
    with pytest.raises(ConfigError, match="no usable 'lr_opt' law"):
        law_centre(str(tmp_path / "f.json"), "lr_opt", 1e12, ModelConfig())
    with pytest.raises(ConfigError, match="no usable 'n_opt' or 'm_opt' law"):
        compute_optimal_budget(ModelConfig(), str(tmp_path / "f.json"))
    with pytest.raises(ConfigError, match="not found"):
        law_centre(str(tmp_path / "none.json"), "lr_opt", 1e12, ModelConfig())


def test_a_law_whose_centre_is_not_a_positive_number_is_refused(tmp_path):
    """A hand-edited lr law with a = -1 centred a grid on negative learning rates."""
    import json

    import pytest

    from scaling.advise.grids import law_centre
    from scaling.config import ConfigError, ModelConfig

    path = tmp_path / "fit.json"
    path.write_text(json.dumps({"laws": {"lr_opt": {"kind": "power", "variables": ["C"],
                                                    "params": {"a": 1e300, "b": 1.0}}}}))  # inf at 1e12 FLOPs
    with pytest.raises(ConfigError, match="gives inf for a run of 1e\\+12 FLOPs, not a positive number to centre"):
        law_centre(str(path), "lr_opt", 1e12, ModelConfig())
