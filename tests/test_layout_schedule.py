"""The schedule simulation against what 1F1B and interleaved 1F1B are known to take."""

import random

import pytest

from scaling.layout.schedule import rank_order, simulate


@pytest.mark.parametrize("pp,m", [(1, 4), (4, 4), (4, 8), (8, 32), (3, 2)])
def test_1f1b_takes_m_plus_p_minus_1_slots_and_keeps_p_minus_s_micro_batches(pp, m):
    f, b = 1.0, 2.0
    sim = simulate([f] * pp, [b] * pp, [1.0] * pp, pp, m)
    assert sim.step_s == pytest.approx((m + pp - 1) * (f + b))
    assert sim.bubble == pytest.approx((pp - 1) / (m + pp - 1))
    assert list(sim.in_flight) == [min(pp - s, m) for s in range(pp)]
    assert list(sim.peak_activation_bytes) == [float(min(pp - s, m)) for s in range(pp)]


@pytest.mark.parametrize("pp,vpp,m", [(4, 2, 8), (4, 2, 4), (2, 3, 6), (8, 4, 16)])
def test_interleaving_cuts_the_bubble_by_the_virtual_stages(pp, vpp, m):
    """Each rank's V chunks of 1/V the work: the bubble is (P - 1)(f + b)/V, as Megatron's paper derives."""
    f, b = 1.0 / vpp, 2.0 / vpp
    sim = simulate([f] * (pp * vpp), [b] * (pp * vpp), [1.0] * (pp * vpp), pp, m)
    assert sim.step_s == pytest.approx(m * 3.0 + (pp - 1) * 3.0 / vpp)
    warmup = [min(m * vpp, (pp - r - 1) * 2 + (vpp - 1) * pp) if m > pp else m * vpp for r in range(pp)]
    assert list(sim.in_flight) == [min(m * vpp, w + 1) for w in warmup]


def test_every_pass_runs_once_and_after_its_inputs_for_uneven_stages():
    rng = random.Random(0)
    for _ in range(30):
        pp, vpp = rng.choice([1, 2, 4]), rng.choice([1, 2])
        m = pp * rng.randint(1, 4)
        stages = pp * vpp
        fwd = [rng.uniform(0.5, 3) for _ in range(stages)]
        bwd = [2 * x for x in fwd]
        sim = simulate(fwd, bwd, [1.0] * stages, pp, m)
        orders = [rank_order(r, pp, vpp, m) for r in range(pp)]
        assert sorted(p for o in orders for p in o) == sorted(
            (k, s, i) for k in "FB" for s in range(stages) for i in range(m))
        critical = sum(fwd) + sum(bwd)  # one micro-batch through every stage and back
        assert sim.step_s >= max(max(sim.busy_s), critical) - 1e-9
        assert sim.step_s <= sum(sim.busy_s) + 1e-9


def test_interleaving_needs_micro_batches_in_groups_of_the_pipeline():
    with pytest.raises(ValueError, match="multiple of the pipeline stages"):
        simulate([1.0] * 8, [2.0] * 8, [1.0] * 8, 4, 6)
