"""The balanced split: optimal against every split of small cases, within memory, by Megatron's MTP rule."""

import itertools
import random

import pytest

from scaling.layout.split import balanced_split, even_split
from scaling.layout.units import Unit


def units_of(costs, kinds=None):
    kinds = kinds or ["E", *"t" * (len(costs) - 2), "L"]
    return [Unit(k, f"u{i}", (f"u{i}",), c / 3, 2 * c / 3, 1, 0, 1.0)
            for i, (k, c) in enumerate(zip(kinds, costs, strict=True))]


def every_split(n, stages):
    for cuts in itertools.combinations(range(1, n), stages - 1):
        ends = [*cuts, n]
        yield [tuple(range(s, e)) for s, e in zip([0, *cuts], ends, strict=True)]


def test_the_balanced_split_has_the_smallest_bottleneck_of_every_split():
    rng = random.Random(1)
    for _ in range(40):
        n, stages = rng.randint(4, 9), rng.randint(2, 4)
        if stages > n:
            continue
        units = units_of([rng.uniform(0.1, 5) for _ in range(n)])
        got = balanced_split(units, stages)
        best = min(max(sum(units[i].cost for i in s) for s in split) for split in every_split(n, stages))
        assert max(got.costs(units)) == pytest.approx(best)
        assert [i for s in got.stages for i in s] == list(range(n)) and all(got.stages)


def test_among_equal_bottlenecks_the_other_stages_are_even_too():
    units = units_of([1, 1, 1, 1, 1, 1, 1, 1, 8])  # the 8 is the bottleneck whatever the rest does
    split = balanced_split(units, 3)
    assert split.costs(units) == pytest.approx([4, 4, 8])


def test_memory_is_respected_and_an_impossible_split_is_refused_with_the_fix():
    units = units_of([1] * 8)
    split = balanced_split(units, 2, fits=lambda k, i, j: j - i <= 3 if k == 0 else True)
    assert len(split.stages[0]) <= 3
    with pytest.raises(ValueError, match="no split of 8 units over 2 stages fits.*--pp"):
        balanced_split(units, 2, fits=lambda k, i, j: j - i <= 3)


def test_mtp_blocks_stay_together_in_a_ranks_last_chunk():
    kinds = ["E", *"t" * 8, "m", "L"]
    units = units_of([0.1, *[1] * 8, 3, 0.5], kinds)
    for pp, vpp in ((2, 1), (2, 2), (4, 2)):
        split = balanced_split(units, pp, vpp)
        (k,) = [k for k, s in enumerate(split.stages) if 9 in s]
        assert k >= len(split.stages) - pp


def test_the_even_split_is_the_engines_default():
    units = units_of([0.1, *[1] * 10, 2], ["E", *"t" * 10, "L"])
    assert even_split(units, 4).stages == ((0, 1, 2, 3), (4, 5, 6), (7, 8), (9, 10, 11))
