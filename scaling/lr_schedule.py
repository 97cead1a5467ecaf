"""Learning-rate schedules (pure Python): linear warmup, then cosine, or WSD (warmup-stable-decay, as Ling uses)."""

from __future__ import annotations

import math

from scaling.config import TrainConfig


def warmup_steps(cfg: TrainConfig, steps: int) -> int:
    """Steps of linear warmup of a run of `steps` steps: train.warmup_steps when set, else its fraction."""
    return cfg.warmup_steps if cfg.warmup_steps > 0 else int(round(cfg.warmup_fraction * steps))


def decay_steps(cfg: TrainConfig, steps: int) -> int:
    """Steps of a WSD run's final decay."""
    return max(1, int(round(cfg.decay_fraction * steps)))


def stable_end(cfg: TrainConfig, steps: int) -> int:
    """Optimizer steps a WSD run takes before its decay (warmup and stable phase): up to there, runs of every
    length with the same warmup follow the same schedule (the branch point of scaling/branching.py)."""
    return steps - decay_steps(cfg, steps)


def lr_at(step: int, steps: int, cfg: TrainConfig) -> float:
    """Learning rate of optimizer step `step` (0-based) of `steps`.

    Warmup rises linearly to cfg.lr over its steps. Cosine then falls to min_lr_ratio * lr at the last step.
    WSD holds cfg.lr, then over the last decay_fraction of the steps decays to min_lr_ratio * lr,
    exponentially ('exp', Ling) or linearly.
    """
    warm = warmup_steps(cfg, steps)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    floor = cfg.min_lr_ratio
    if cfg.schedule == "cosine":
        span = max(1, steps - warm - 1)
        progress = min(1.0, (step - warm) / span)
        return cfg.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
    decay, start = decay_steps(cfg, steps), stable_end(cfg, steps)
    if step < start:
        return cfg.lr
    progress = min(1.0, (step - start + 1) / decay)
    if cfg.wsd_decay == "exp":
        return cfg.lr * floor**progress
    return cfg.lr * (1 - (1 - floor) * progress)
