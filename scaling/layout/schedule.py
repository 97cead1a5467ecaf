"""A pipeline schedule, simulated: each rank runs its forward and backward passes in the order 1F1B or Megatron's
interleaved 1F1B gives it, each pass starting when its rank is free and its input has arrived (the previous
stage's forward of that micro-batch, the next stage's backward). Communication takes `latency` seconds per hop
(0 by default: not modelled unless you model it); the optimizer step and data-parallel reductions are outside.

Stages are virtual stages in Megatron's order: stage k runs on rank k % P as its chunk k // P (V = S / P chunks per
rank; V = 1 is plain 1F1B). A rank keeps a micro-batch's activations of a stage from that stage's forward to its
backward; the peak over the schedule, per rank, is what 1F1B's "up to P - s micro-batches in flight on stage s"
becomes exactly.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Simulation:
    """One optimizer step's pipeline, simulated."""

    step_s: float
    """From the first forward to the last backward."""
    bubble: float
    """The ranks' mean idle fraction of the step: the pipeline's fill and drain, and the waits an unbalanced split
    adds (a rank idles while a slower stage holds its micro-batch)."""
    busy_s: tuple[float, ...]
    """Per rank: seconds computing."""
    peak_activation_bytes: tuple[float, ...]
    """Per rank: the most activation bytes held at once."""
    in_flight: tuple[int, ...]
    """Per rank: the most micro-batch-stages held at once."""


def warmup_forwards(rank: int, pp: int, vpp: int, microbatches: int) -> int:
    """The forwards rank `rank` runs before its first backward: P - rank - 1 under 1F1B; under Megatron's
    interleaved 1F1B (P - rank - 1) x 2 + (V - 1) x P, or all of them when the micro-batches are only P. A rank
    holds at most this + 1 micro-batch-stages of activations."""
    total = microbatches * vpp
    if vpp == 1:
        return min(pp - rank - 1, microbatches)
    return total if microbatches == pp else min(total, (pp - rank - 1) * 2 + (vpp - 1) * pp)


def rank_order(rank: int, pp: int, vpp: int, microbatches: int) -> list[tuple[str, int, int]]:
    """The passes rank `rank` runs, in order: ('F' or 'B', virtual stage, micro-batch). 1F1B for vpp = 1
    (warm-up forwards, then one forward and one backward in turn, then the remaining backwards); Megatron's
    interleaved 1F1B for vpp > 1 (micro-batches in groups of P per chunk; needs microbatches a multiple of P)."""
    total = microbatches * vpp
    if vpp > 1 and microbatches % pp:
        raise ValueError(f"interleaved 1F1B needs the micro-batches ({microbatches}) to be a multiple of the "
                         f"pipeline stages ({pp})")
    warmup = warmup_forwards(rank, pp, vpp, microbatches)

    def forward(k: int) -> tuple[str, int, int]:
        chunk = (k // pp) % vpp
        return "F", chunk * pp + rank, (k // (pp * vpp)) * pp + k % pp

    def backward(k: int) -> tuple[str, int, int]:
        chunk = vpp - 1 - (k // pp) % vpp
        return "B", chunk * pp + rank, (k // (pp * vpp)) * pp + k % pp

    order = [forward(k) for k in range(warmup)]
    for k in range(total - warmup):
        order += [forward(warmup + k), backward(k)]
    order += [backward(k) for k in range(total - warmup, total)]
    return order


def simulate(forward_s: list[float], backward_s: list[float], activation_bytes: list[float], pp: int,
             microbatches: int, latency: float = 0.0) -> Simulation:
    """Simulate one step of S = len(forward_s) virtual stages on `pp` ranks: per stage, the seconds of one
    micro-batch's forward and backward and the activation bytes it keeps until its backward."""
    stages = len(forward_s)
    if stages % pp:
        raise ValueError(f"{stages} stages do not divide over {pp} pipeline ranks")
    vpp = stages // pp
    orders = [rank_order(r, pp, vpp, microbatches) for r in range(pp)]
    done: dict[tuple[str, int, int], float] = {}
    position, free = [0] * pp, [0.0] * pp
    held, peak, count, most = [0.0] * pp, [0.0] * pp, [0] * pp, [0] * pp
    busy = [0.0] * pp
    remaining = sum(len(o) for o in orders)
    while remaining:
        progressed = False
        for r in range(pp):
            while position[r] < len(orders[r]):
                kind, s, mb = orders[r][position[r]]
                if kind == "F":
                    need = ("F", s - 1, mb) if s > 0 else None
                else:
                    need = ("B", s + 1, mb) if s < stages - 1 else ("F", s, mb)
                if need is not None and need not in done:
                    break
                arrival = done[need] + (latency if need[1] != s else 0.0) if need is not None else 0.0
                seconds = forward_s[s] if kind == "F" else backward_s[s]
                start = max(free[r], arrival)
                done[(kind, s, mb)] = free[r] = start + seconds
                busy[r] += seconds
                if kind == "F":
                    held[r] += activation_bytes[s]
                    count[r] += 1
                else:
                    held[r] -= activation_bytes[s]
                    count[r] -= 1
                peak[r], most[r] = max(peak[r], held[r]), max(most[r], count[r])
                position[r] += 1
                remaining -= 1
                progressed = True
        if not progressed:
            raise RuntimeError("the pipeline schedule deadlocked (a pass waits on one that never runs)")
    step = max(done.values())
    return Simulation(step, sum(step - b for b in busy) / (pp * step) if step else 0.0, tuple(busy), tuple(peak),
                      tuple(most))
