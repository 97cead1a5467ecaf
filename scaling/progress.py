"""The training-progress line of logs, written and read in one place.

A run trained without a live progress bar (a sweep's cell, a batch job, `scaling train --no-progress`) prints one
line every `train.log_every` steps, so `tail -f` on its log shows it moving:

    step 40/120 loss 3.2104 smoothed 3.3001 lr 2.10e-03 tokens 81,920 48,213 tok/s eta 12s

`scaling status` reads the last such line of a running cell's log for its live step count.
"""

from __future__ import annotations

import re
from pathlib import Path

_LINE = re.compile(r"^step (\d+)/(\d+) ", re.MULTILINE)
TAIL_BYTES = 8192
"""How much of a log's end is read for its last progress line."""


def line(step: int, steps: int, loss: float, smoothed: float, lr: float, tokens: int, tokens_per_s: float) -> str:
    eta = (steps - step) * (tokens / max(step, 1)) / tokens_per_s if tokens_per_s > 0 else float("nan")
    return (f"step {step}/{steps} loss {loss:.4f} smoothed {smoothed:.4f} lr {lr:.2e} tokens {tokens:,} "
            f"{tokens_per_s:,.0f} tok/s eta {eta:.0f}s")


def last_step(log: Path) -> int | None:
    """The step of the last progress line in a log (its last TAIL_BYTES), or None when it has none."""
    try:
        with open(log, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - TAIL_BYTES))
            tail = f.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    steps = _LINE.findall(tail)
    return int(steps[-1][0]) if steps else None
