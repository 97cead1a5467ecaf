"""The time estimate: one probe per distinct model shape, the rest from the probes' FLOP rate."""

import math

import pytest

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


GPU_PRESETS = ("lr_batch", "activation_ratio", "granularity", "isoflop", "wind_tunnel", "precision")


@pytest.mark.parametrize("name", GPU_PRESETS)
def test_a_gpu_presets_hours_are_a_hand_count_with_the_head_and_its_dry_run_shows_them_per_cell(name, monkeypatch):
    """Each cell's tokens x (M + 3 x 2 d V, the output head's matmul forward and backward), over 35% of an H100's
    989.4 TFLOP/s: the plan's GPU-hours within 1%, and a GPU h column per cell that sums to them."""
    from rich.console import Console

    from scaling.sweep.plan import compose_sweep
    from scaling.tables import sweep_table

    monkeypatch.setenv("SCALING_DATA", "/data/tokens")
    plan = plan_sweep(compose_sweep(name, ["data.train_tokens=1e11"]), data_required=False)
    assert not plan.branch_predecessors()
    hand = sum(c.plan.tokens * (c.plan.counts.M + 6 * c.run.model.d_model * c.run.model.vocab_size)
               for c in plan.cells) / (989.4e12 * 0.35) / 3600
    assert estimate.gpu_hours(plan.mfu_flops, plan.config.launcher.assumed_mfu) == pytest.approx(hand, rel=0.01)
    console = Console(width=300, record=True)
    console.print(sweep_table(plan, {}))
    text = console.export_text()
    header = next(line for line in text.splitlines() if "GPU h" in line)
    column = [c.strip() for c in header.split("┃")].index("GPU h")
    per_cell = [float(line.split("│")[column]) for line in text.splitlines() if line.startswith("│")]
    assert len(per_cell) == len(plan.cells) and sum(per_cell) == pytest.approx(hand, rel=0.02)
    import re

    shown = float(re.search(r"= ([\d,]+) H100-hours", " ".join(text.split())).group(1).replace(",", ""))
    assert shown == pytest.approx(hand, rel=0.01, abs=0.5)


def test_cells_packed_on_one_gpu_share_its_memory_and_are_refused_with_the_numbers():
    """runs_per_gpu = k: each cell is planned in 1/k of the GPU's memory (four demo cells of 0.014 GiB each on a
    0.04 GiB 'GPU' do not fit, one does); the refusal names the share and the fix."""
    from scaling.sweep.plan import PlanError, compose_sweep

    fits = plan_sweep(compose_sweep("demo", ["launcher.gpu_memory_gb=0.04", "budgets=[1e11]"]))
    assert all(c.memory.fits for c in fits.cells)
    with pytest.raises(PlanError, match=r"shared by launcher.runs_per_gpu=4 cells: 0.01 GiB each; lower "
                                        r"runs_per_gpu"):
        plan_sweep(compose_sweep("demo", ["launcher.gpu_memory_gb=0.04", "launcher.runs_per_gpu=4",
                                          "budgets=[1e11]"]))


def test_a_shape_whose_mfu_was_measured_on_the_target_gpu_is_costed_at_it(monkeypatch, tmp_path):
    """`scaling bench --sweep` keeps each shape's MFU per GPU: the plan costs those cells at it and the rest at
    launcher.assumed_mfu, and says so; a plan for another GPU ignores it."""
    from scaling import gpus
    from scaling.sweep.plan import compose_sweep
    from scaling.tables import sweep_table

    monkeypatch.setenv("SCALING_CACHE", str(tmp_path))
    monkeypatch.setenv("SCALING_DATA", "/data/tokens")
    plan = plan_sweep(compose_sweep("isoflop", ["data.train_tokens=1e11"]), data_required=False)
    first = plan.cells[0]
    same_shape = [c for c in plan.cells if gpus.run_shape_key(c.run) == gpus.run_shape_key(first.run)]
    assumed = estimate.cell_gpu_hours(plan)
    assert gpus.keep_measured_mfu("H100", gpus.run_shape_key(first.run), 0.5, 1e6, "NVIDIA H100 80GB HBM3")
    hours = estimate.cell_gpu_hours(plan)
    for c in plan.cells:
        ratio = 0.35 / 0.5 if c in same_shape else 1.0
        assert hours[c.run_id] == pytest.approx(assumed[c.run_id] * ratio)
    caption = " ".join(sweep_table(plan, {}).caption.split())
    assert f"the MFU measured on H100 for {len(same_shape)} of {len(plan.cells)} cells (50%-50%)" in caption
    assert f"= {sum(hours.values()):,.0f} H100-hours" in caption
    on_a100 = plan_sweep(compose_sweep("isoflop", ["data.train_tokens=1e11", "launcher.gpu=A100"]),
                         data_required=False)
    a100 = estimate.cell_gpu_hours(on_a100)
    assert a100[first.run_id] == pytest.approx(assumed[first.run_id] * 989e12 / 312e12)  # nothing measured there
    assert "launcher.assumed_mfu=0.35; an assumption" in " ".join(sweep_table(on_a100, {}).caption.split())
