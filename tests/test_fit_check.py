"""The wind tunnel end to end on CPU: a ladder sweep built from a fit's laws, then predicted vs achieved loss."""

import json
import subprocess
import sys

import pytest

from scaling.config import compose
from scaling.flops import count

BASE = ["model.d_model=32", "model.n_heads=2", "model.d_expert=32", "model.seq_len=64", "train.batch_size=4",
        "data.val_tokens=2048", "wandb.mode=disabled"]
LADDER = [{"d_model": 32, "n_layers": 1}, {"d_model": 32, "n_layers": 2}, {"d_model": 48, "n_layers": 2}]


@pytest.mark.slow
def test_ladder_sweep_and_wind_tunnel_check(tmp_path):
    n_small = count(compose([*BASE, "model.n_layers=1"]).model).params_active_non_embedding
    laws = {"laws": {  # N_opt = a C^0.5 puts the smallest rung at 2e9 FLOPs
        "n_opt": {"formula": "a * C^b", "params": {"a": n_small / 2e9**0.5, "b": 0.5}},
        "lr_opt": {"formula": "a * C^b", "params": {"a": 0.3, "b": -0.125}},
        "loss_vs_compute": {"formula": "E + A * C^-alpha", "params": {"E": 1.0, "A": 2000.0, "alpha": 0.3}},
    }}
    (tmp_path / "fit.json").write_text(json.dumps(laws))
    (tmp_path / "wind.yaml").write_text(
        "defaults:\n  - sweep_schema\n  - _self_\nname: wind\n"
        f"laws: {tmp_path / 'fit.json'}\nbase: {json.dumps(BASE)}\nladder: {json.dumps(LADDER)}\n"
        "lr: {law: '${laws}'}\n")
    cli = [sys.executable, "-m", "scaling.cli"]
    out = subprocess.run([*cli, "sweep", str(tmp_path / "wind.yaml"), "--results-dir", str(tmp_path / "r"),
                          "--no-probe", "--no-progress"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    check = subprocess.run([*cli, "fit", "--check", "wind", "--results-dir", str(tmp_path / "r"), "--json"],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr
    rows = json.loads(check.stdout)
    assert len(rows) == 3
    budgets = [r["budget"] for r in rows]
    assert budgets[0] == pytest.approx(2e9, rel=0.01) and budgets == sorted(budgets)  # bigger rungs, more compute
    for r in rows:
        assert r["loss_predicted"] == pytest.approx(1.0 + 2000.0 * r["C"] ** -0.3)
        assert r["loss_error"] == pytest.approx(r["loss_measured"] - r["loss_predicted"])
        assert r["loss_held"] is None  # a hand-written law has no resamples: no interval to hold to
        assert r["lr_predicted"] == pytest.approx(0.3 * r["C"] ** -0.125)
    table = subprocess.run([*cli, "fit", "--check", "wind", "--results-dir", str(tmp_path / "r")],
                           capture_output=True, text=True, timeout=120)
    assert table.returncode == 0 and "predictions checked by training" in table.stdout
    missing = subprocess.run([*cli, "fit", "--check", "nope", "--results-dir", str(tmp_path / "r")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "names no laws" in missing.stderr


def test_a_ladder_without_laws_is_refused():
    from scaling.config import ConfigError
    from scaling.sweep.plan import SweepConfig, plan_sweep

    with pytest.raises(ConfigError, match="ladder but no laws"):
        plan_sweep(SweepConfig(name="w", base=BASE, ladder=LADDER))
