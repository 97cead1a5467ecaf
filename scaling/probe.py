"""A short throughput probe: tokens per second of a few real training steps of a model on this device.

Used by `scaling sweep --dry-run` to estimate a sweep's wall time before launching it.
"""

from __future__ import annotations

import time

from scaling.config import ModelConfig


def tokens_per_second(model_cfg: ModelConfig, batch_size: int, device: str = "auto", steps: int = 3,
                      warmup: int = 1, threads: int | None = None) -> float:
    """Median-free quick estimate: tokens / s over `steps` AdamW steps after `warmup` steps, random tokens."""
    import torch
    import torch.nn.functional as F

    from scaling import device as device_mod
    from scaling.model import build_model

    if threads:
        torch.set_num_threads(threads)
    dev = device_mod.pick(device)
    torch.manual_seed(0)
    model = build_model(model_cfg).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=dev.type == "cuda")
    x = torch.randint(0, model_cfg.vocab_size, (batch_size, model_cfg.seq_len + 1), device=dev)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast(
        "cpu", enabled=False)

    def step():
        with autocast:
            logits = model(x[:, :-1])
        F.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return steps * batch_size * model_cfg.seq_len / (time.perf_counter() - t0)
