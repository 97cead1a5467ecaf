"""The next rung: the verdicts' advice as the next sweep, written beside the fit and planned as a dry run."""

import json

import pytest
import yaml
from synthetic import write_sweep

from scaling.advise.fitfile import read_fit
from scaling.advise.next_sweep import actions_of
from scaling.advise.pipeline import FitOptions, fit_sweep
from scaling.sweep.plan import compose_sweep, plan_sweep
from tests.inprocess import scaling

EDGE_LRS = (1e-2, 2e-2, 4e-2, 8e-2)
"""Above the true optimum at 1e11 (about 7e-3): that bowl's vertex is at the low edge."""
LRS = (1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2)


def test_advice_becomes_the_next_sweep_on_the_fitted_family(tmp_path):
    """Asked for 1e14 (100x beyond a 10x span) with the 1e11 bowl at its low edge: the next sweep adds the next
    x3 budget and two learning rates below the edge at 1e11."""
    results = tmp_path / "r"
    write_sweep(results, "nx", budgets=(1e11,), lrs=EDGE_LRS, noise=0.005, seed=1)
    write_sweep(results, "nx", budgets=(3e11, 1e12), lrs=LRS, noise=0.005, seed=2)
    fit_sweep(results, FitOptions(sweep="nx", bootstrap=100, plots=False, target_flops=1e14))
    fit = read_fit(results / "nx" / "fit" / "fit.json")
    kinds = {(a["kind"], a.get("direction")) for a in actions_of(fit)}
    assert ("add_budget", None) in kinds and ("widen_lr", "down") in kinds

    out = scaling("next", "nx", "--results-dir", results)
    assert out.returncode == 0, out.stderr
    path = results / "nx" / "fit" / "next.yaml"
    assert f"wrote {path}" in out.stdout and "sweep nx:" in out.stdout  # the dry run's table
    config = yaml.safe_load(path.read_text())
    assert config["name"] == "nx" and "widen lr downwards at C = 1e+11" in config["description"]
    parts = {(p["budgets"][0], tuple(p["lr"]["values"])) for p in config["parts"]}
    assert (1e11, (2.5e-3, 5e-3)) in parts  # two x2 steps below the edge
    new_budget = [p for p in config["parts"] if p["budgets"] == [3e12]]
    assert len(new_budget) == 1 and new_budget[0]["seeds"] == [0, 1]
    lrs = new_budget[0]["lr"]["values"]
    assert len(lrs) == 5 and lrs[2] == pytest.approx(fit.laws["lr_opt"].value(C=3e12), rel=1e-3)

    plan = plan_sweep(compose_sweep(str(path)), data_required=False)
    assert len(plan.cells) == 2 * 2 + 5 * 2
    record = next(iter(fit_sweep.__globals__["load_runs"](None, results, "nx").df["config"]))
    assert all(c.run.model.__dict__ == {**c.run.model.__dict__, **record["model"]} for c in plan.cells)


def test_no_advice_writes_nothing(tmp_path):
    """A fit whose every verdict is reliable asks for nothing: no file, and said so."""
    results = tmp_path / "r"
    write_sweep(results, "ok", budgets=(1e11, 3e11, 1e12), lrs=LRS, noise=0.002)
    fit_dir = results / "ok" / "fit"
    fit_dir.mkdir(parents=True)
    law = {"kind": "power", "variables": ["C"], "params": {"a": 5.07, "b": -0.26},
           "verdict": {"verdict": "reliable", "reasons": ["every criterion met"], "advice": [], "actions": []}}
    (fit_dir / "fit.json").write_text(json.dumps({"convention": "M", "family": "A0.25-G1", "laws": {"lr_opt": law}}))
    out = scaling("next", "ok", "--results-dir", results)
    assert out.returncode == 0 and "nothing written" in out.stdout
    assert not (fit_dir / "next.yaml").exists()


def test_next_without_a_fit_names_the_fix(tmp_path):
    out = scaling("next", "none", "--results-dir", tmp_path)
    assert out.returncode == 2 and "run `scaling fit SWEEP` first" in out.stderr


def test_a_first_rung_without_an_lr_law_is_advised_from_its_optima(tmp_path):
    """Two budgets, the smaller with its optimum below the grid: no lr law yet, and the next sweep adds the third
    budget and widens the edge."""
    results = tmp_path / "r"
    write_sweep(results, "first", budgets=(1e11,), lrs=EDGE_LRS, noise=0.005, seed=1)
    write_sweep(results, "first", budgets=(3e11,), lrs=LRS, noise=0.005, seed=2)
    fit_sweep(results, FitOptions(sweep="first", bootstrap=100, plots=False))
    fit = read_fit(results / "first" / "fit" / "fit.json")
    assert "lr_opt" not in fit.laws
    kinds = {(a["kind"], a.get("direction"), a.get("budget")) for a in actions_of(fit)}
    assert ("add_budget", None, None) in kinds and ("widen_lr", "down", 1e11) in kinds
    out = scaling("next", "first", "--results-dir", results)
    assert out.returncode == 0 and (results / "first" / "fit" / "next.yaml").exists(), out.stderr
