"""The time estimate: one probe per distinct model shape, the rest from the probes' FLOP rate."""

import math

from scaling.sweep import estimate
from scaling.sweep.launcher import LauncherConfig
from scaling.sweep.plan import SweepConfig, plan_sweep


def _plan(budgets, d_models):
    cfg = SweepConfig(name="est", budgets=list(budgets), base=["wandb.mode=disabled"],
                      axes={"model.d_model": list(d_models)})
    return plan_sweep(cfg)


def test_each_shape_is_probed_once_and_cells_scale_with_their_tokens(monkeypatch):
    probed = []

    def fake_rate(model, batch_size, device, threads, **precision):
        probed.append(model.d_model)
        return 1000.0 * model.d_model

    monkeypatch.setattr(estimate, "tokens_per_second", fake_rate)
    plan = _plan((3e11, 1e12), (64, 128))
    seconds = estimate.estimate_sweep_seconds(plan, LauncherConfig(device="cpu"))
    assert sorted(probed) == [64, 128]  # two shapes, four cells
    for c in plan.cells:
        expected = c.plan.tokens / (1000.0 * c.run.model.d_model) + estimate.OVERHEAD_S
        assert math.isclose(seconds[c.run_id], expected)


def test_beyond_the_probe_limit_cells_are_estimated_from_the_mean_flop_rate(monkeypatch):
    monkeypatch.setattr(estimate, "MAX_PROBES", 1)
    monkeypatch.setattr(estimate, "tokens_per_second", lambda model, batch_size, device, threads, **kw: 5e4)
    plan = _plan((3e11,), (64, 128))
    seconds = estimate.estimate_sweep_seconds(plan, LauncherConfig(device="cpu"))
    first, second = plan.cells
    flop_rate = 5e4 * first.plan.counts.M
    assert math.isclose(seconds[second.run_id],
                        second.plan.tokens / (flop_rate / second.plan.counts.M) + estimate.OVERHEAD_S)


def test_a_failing_probe_leaves_the_cell_unestimated(monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("no device")

    monkeypatch.setattr(estimate, "tokens_per_second", broken)
    assert estimate.estimate_sweep_seconds(_plan((3e11,), (64,)), LauncherConfig(device="cpu")) == {}
    assert math.isnan(estimate.estimate_seconds(_plan((3e11,), (64,)).cells[0], 0.0))


def test_each_precision_is_probed_in_its_own_precision(monkeypatch):
    probed = []

    def fake_rate(model, batch_size, device, threads, precision, fp8_scaling):
        probed.append(precision)
        return 2e4 if precision == "fp8" else 4e4

    monkeypatch.setattr(estimate, "tokens_per_second", fake_rate)
    plan = plan_sweep(SweepConfig(name="est", budgets=[3e11], base=["wandb.mode=disabled"],
                                  axes={"train.precision": ["bf16", "fp8"]}))
    seconds = estimate.estimate_sweep_seconds(plan, LauncherConfig(device="cpu"))
    assert sorted(probed) == ["bf16", "fp8"]
    bf16, fp8 = plan.cells
    assert seconds[fp8.run_id] > 1.9 * (seconds[bf16.run_id] - estimate.OVERHEAD_S)


def test_a_cell_too_big_for_this_machine_is_not_probed(monkeypatch):
    """A GPU preset's dry run on a laptop: probing a 60 GiB cell on the CPU would exhaust the machine."""
    monkeypatch.setattr(estimate, "tokens_per_second", lambda *a, **k: (_ for _ in ()).throw(AssertionError()))
    monkeypatch.setattr(estimate, "PROBE_MEMORY_FRACTION", 0.0)
    assert estimate.estimate_sweep_seconds(_plan((3e11,), (64,)), LauncherConfig(device="cpu")) == {}
