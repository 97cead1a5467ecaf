"""Which units each pipeline stage holds: contiguous runs of units over S = P x V stages (virtual stages in
Megatron's order: stage k on rank k % P as its chunk k // P).

`even_split` is what the engines do by default: the decoder layers divided evenly over the stages (the first
stages take one more where they do not divide), the embedding on the first stage, MTP blocks and the head + loss
on the last. `balanced_split` minimises the largest stage cost (a dynamic programme over the units, O(S n^2)),
then, among the splits with that bottleneck, the sum of squared stage costs (so the stages off the critical one
are even too), subject to each stage fitting its memory and to Megatron-Core's placement rules (every stage holds
a unit while there are as many units as stages; all MTP blocks in one stage, a rank's last chunk).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from scaling.layout.units import Unit


@dataclass(frozen=True)
class Split:
    """Units per virtual stage (indices into the unit list), in stage order."""

    stages: tuple[tuple[int, ...], ...]
    pp: int

    @property
    def vpp(self) -> int:
        return len(self.stages) // self.pp

    def costs(self, units: list[Unit]) -> list[float]:
        return [sum(units[i].cost for i in stage) for stage in self.stages]


def even_split(units: list[Unit], pp: int, vpp: int = 1) -> Split:
    """The decoder layers evenly over P x V stages (remainder to the first stages), E first, MTP and L last."""
    stages = pp * vpp
    layers = [i for i, u in enumerate(units) if u.kind == "t"]
    per, extra = divmod(len(layers), stages)
    out, at = [], 0
    for k in range(stages):
        n = per + (1 if k < extra else 0)
        out.append(layers[at: at + n])
        at += n
    out[0] = [i for i, u in enumerate(units) if u.kind == "E"] + out[0]
    out[-1] = out[-1] + [i for i, u in enumerate(units) if u.kind in ("m", "L")]
    return Split(tuple(tuple(s) for s in out), pp)


def balanced_split(units: list[Unit], pp: int, vpp: int = 1,
                   fits: Callable[[int, int, int], bool] | None = None) -> Split:
    """The contiguous split of `units` over P x V stages with the smallest largest stage cost, then the smallest
    sum of squared stage costs; `fits(stage, first, end)` says whether units [first, end) fit stage `stage`'s
    memory (None: no limit). ValueError when no split fits."""
    n, stages = len(units), pp * vpp
    prefix = [0.0]
    for u in units:
        prefix.append(prefix[-1] + u.cost)
    mtp = [i for i, u in enumerate(units) if u.kind == "m"]
    allow_empty = n < stages

    def ok(k: int, i: int, j: int) -> bool:
        if i == j:
            return allow_empty
        if mtp and any(i <= x < j for x in mtp):
            if not (i <= mtp[0] and mtp[-1] < j) or k < stages - pp:
                return False  # Megatron: all MTP blocks in one stage, in a rank's last chunk
        return fits is None or fits(k, i, j)

    def solve(score, combine) -> list[int] | None:
        """best[k][j]: the best score of units [0, j) over stages [0, k]; returns the stage ends."""
        inf = math.inf
        best = [[inf] * (n + 1) for _ in range(stages)]
        back = [[-1] * (n + 1) for _ in range(stages)]
        for j in range(n + 1):
            if ok(0, 0, j):
                best[0][j], back[0][j] = score(0, j), 0
        for k in range(1, stages):
            for j in range(n + 1):
                for i in range(j + 1):
                    if best[k - 1][i] == inf or not ok(k, i, j):
                        continue
                    value = combine(best[k - 1][i], score(i, j))
                    if value < best[k][j]:
                        best[k][j], back[k][j] = value, i
        if best[stages - 1][n] == inf:
            return None
        ends, j = [], n
        for k in range(stages - 1, -1, -1):
            ends.append(j)
            j = back[k][j]
        return ends[::-1]

    bottleneck_ends = solve(lambda i, j: prefix[j] - prefix[i], max)
    if bottleneck_ends is None:
        raise ValueError(f"no split of {n} units over {stages} stages fits each stage's memory: more stages "
                         f"(--pp, --vpp), expert parallelism (--ep), or more memory per GPU")
    starts = [0, *bottleneck_ends[:-1]]
    bottleneck = max(prefix[e] - prefix[s] for s, e in zip(starts, bottleneck_ends, strict=True))
    limit = bottleneck * (1 + 1e-9)
    ends = solve(lambda i, j: (prefix[j] - prefix[i]) ** 2 if prefix[j] - prefix[i] <= limit else math.inf,
                 lambda a, b: a + b) or bottleneck_ends
    starts = [0, *ends[:-1]]
    return Split(tuple(tuple(range(s, e)) for s, e in zip(starts, ends, strict=True)), pp)
