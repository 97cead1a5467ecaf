"""Learning-rate schedules (pure Python): linear warmup, then cosine, or WSD (warmup-stable-decay, as Ling uses)."""

from __future__ import annotations

import math

from scaling.config import TrainConfig


def warmup_steps(cfg: TrainConfig, steps: int) -> int:
    return int(round(cfg.warmup_fraction * steps))


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
    decay = max(1, int(round(cfg.decay_fraction * steps)))
    start = steps - decay
    if step < start:
        return cfg.lr
    progress = min(1.0, (step - start + 1) / decay)
    if cfg.wsd_decay == "exp":
        return cfg.lr * floor**progress
    return cfg.lr * (1 - (1 - floor) * progress)
