"""A short throughput probe: tokens per second of a few real training steps of a model on this device.

Used by `scaling sweep --dry-run` to estimate a sweep's wall time before launching it.
"""

from __future__ import annotations

import time

from scaling.config import ModelConfig


def tokens_per_second(model_cfg: ModelConfig, batch_size: int, device: str = "auto", steps: int = 3,
                      warmup: int = 1, threads: int | None = None, precision: str = "auto",
                      fp8_scaling: str = "tensorwise") -> float:
    """A quick estimate: tokens / s over `steps` AdamW steps after `warmup` steps, random tokens."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    return measure(model_cfg, batch_size, device, rounds=1, steps=steps, warmup=warmup, precision=precision,
                   fp8_scaling=fp8_scaling)["tokens_per_s"]


def train_step(forward, optimizer, x_BT1, after_step=None, precision: str = "auto"):
    """One training step as a callable: next-token cross-entropy of `forward(x[:, :-1])` (logits), backward,
    optimizer step, under `precision`'s autocast (scaling/precision.py; 'auto': bf16 on CUDA). Shared by the probe
    and analysis/bench_moe.py, so every model is timed on the same step."""
    import torch.nn.functional as F

    from scaling import precision as precision_mod

    resolved = precision_mod.resolve(precision, x_BT1.device)
    inputs_BT, targets_BT = x_BT1[:, :-1], x_BT1[:, 1:]

    def step() -> None:
        with precision_mod.autocast(x_BT1.device, resolved):
            logits_BTV = forward(inputs_BT)
        F.cross_entropy(logits_BTV.float().flatten(0, 1), targets_BT.flatten()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if after_step is not None:
            after_step()

    return step


def measure(model_cfg: ModelConfig, batch_size: int, device: str = "auto", rounds: int = 5, steps: int = 4,
            warmup: int = 2, compile: bool = False, precision: str = "auto", fp8_scaling: str = "tensorwise") -> dict:
    """Training-step time over `rounds` rounds of `steps` steps (after `warmup`) in `precision` (train.precision):
    median, min and max seconds per step, tokens per second at the median, the device and the precision."""
    import statistics

    import torch

    from scaling import device as device_mod
    from scaling import precision as precision_mod
    from scaling.model import build_model

    dev = device_mod.pick(device)
    torch.manual_seed(0)
    model = build_model(model_cfg).to(dev)
    resolved = precision_mod.resolve(precision, dev)
    info = precision_mod.prepare(model, resolved, fp8_scaling, dev)
    if compile:
        from scaling.config import DataConfig
        from scaling.data import cache_dir
        from scaling.train import compile_model

        forward = compile_model(model, cache_dir(DataConfig()))
    else:
        forward = model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=dev.type in ("cuda", "cpu"))  # as train.py
    x = torch.randint(0, model_cfg.vocab_size, (batch_size, model_cfg.seq_len + 1), device=dev)
    step = train_step(forward, opt, x, model.update_expert_bias, resolved)

    for _ in range(warmup):
        step()
    times = []
    for _ in range(rounds):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times.append((time.perf_counter() - t0) / steps)
    median = statistics.median(times)
    return {"step_s": median, "step_s_min": min(times), "step_s_max": max(times),
            "tokens_per_s": batch_size * model_cfg.seq_len / median, "device": device_mod.describe(dev),
            "low_precision": resolved != "fp32", "device_str": str(dev), "precision": info}


def bench(run, rounds: int = 5, compile: bool = False, fresh_peak: bool = True) -> dict:
    """`measure` a RunConfig's training step at the rows it trains with (its micro-batch where it has one), with
    its MFU (FLOPs with the head, flops.MFU_CONVENTION, over the device's peak: device.peak_flops); on a known GPU
    the MFU is kept for its shape (gpus.keep_measured_mfu), so that a dry run for that GPU costs the shape at it.
    Adds "rows", "flops_per_token", "peak", "mfu" (None without a peak) and "kept_for" (the GPU name, or None)."""
    from scaling import flops, gpus
    from scaling.device import peak_flops

    t = run.train
    rows = t.micro_batch_size or t.batch_size
    r = measure(run.model, rows, t.device, rounds=rounds, compile=compile, precision=t.precision,
                fp8_scaling=t.fp8_scaling)
    counts = flops.count(run.model)
    peak = peak_flops(r["device_str"], r["low_precision"], fresh=fresh_peak)
    mfu = flops.mfu(r["tokens_per_s"], counts, peak)
    gpu = gpus.gpu_of(r["device"]) if r["device_str"].startswith("cuda") else None
    kept = bool(gpu and mfu and gpus.keep_measured_mfu(gpu, gpus.run_shape_key(run), mfu, r["tokens_per_s"],
                                                       r["device"]))
    return {**r, "rows": rows, "flops_per_token": counts.flops_per_token[flops.MFU_CONVENTION], "peak": peak,
            "mfu": mfu, "kept_for": gpu if kept else None}


def bench_shapes(runs: list, rounds: int = 3, compile: bool = False, report=None) -> list[dict]:
    """`bench` each distinct training shape (gpus.run_shape_key) among `runs` once, in order; a shape that fails
    (out of memory, ...) gives {"run": run, "error": its first line}. `report(i, n, result)` after each."""
    from scaling.gpus import run_shape_key

    first: dict[str, object] = {}
    for run in runs:
        first.setdefault(run_shape_key(run), run)
    distinct = list(first.values())
    out = []
    for i, run in enumerate(distinct):
        try:
            result = {"run": run, **bench(run, rounds=rounds, compile=compile, fresh_peak=i == 0)}
        except Exception as e:  # one shape too big for this device must not stop the others
            result = {"run": run, "error": (str(e).strip().splitlines() or [type(e).__name__])[0][:200]}
            _free_device_memory()
        out.append(result)
        if report:
            report(i + 1, len(distinct), result)
    return out


def _free_device_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def unit_seconds(model_cfg: ModelConfig, rows: int, device: str = "auto", rounds: int = 5) -> dict:
    """Forward and backward seconds per token of each pipeline unit (scaling/layout/units.py's names: embedding,
    layer i (dense|MoE), head + loss), measured on this device at `rows` sequences: the embedding, one block of
    each kind and the head with its loss, each timed alone (median of `rounds`, after a warm-up). What the balanced
    split of a real pipeline weighs its units by where FLOPs run at different speeds."""
    import statistics

    import torch
    import torch.nn.functional as F

    from scaling import device as device_mod
    from scaling.model import build_model

    dev = device_mod.pick(device)
    torch.manual_seed(0)
    model = build_model(model_cfg).to(dev)
    tokens = rows * model_cfg.seq_len
    idx = torch.randint(0, model_cfg.vocab_size, (rows, model_cfg.seq_len), device=dev)
    target = torch.randint(0, model_cfg.vocab_size, (rows, model_cfg.seq_len), device=dev)

    def timed(forward) -> tuple[float, float]:
        fwd, bwd = [], []
        for i in range(rounds + 1):
            t0 = time.perf_counter()
            out, inputs = forward()
            t1 = time.perf_counter()
            out.backward(torch.ones_like(out) if out.dim() else None, inputs=inputs)
            t2 = time.perf_counter()
            if i:  # the first round warms up
                fwd.append(t1 - t0)
                bwd.append(t2 - t1)
        return statistics.median(fwd) / tokens, statistics.median(bwd) / tokens

    def embedding():
        out = model.embed(idx)
        return out, [model.embed.weight]

    def block_of(i):
        def run():
            x = torch.randn(rows, model_cfg.seq_len, model_cfg.d_model, device=dev, requires_grad=True)
            return model.blocks[i](x), [x, *model.blocks[i].parameters()]
        return run

    def head_and_loss():
        x = torch.randn(rows, model_cfg.seq_len, model_cfg.d_model, device=dev, requires_grad=True)
        logits = model.head(model.norm(x))
        return F.cross_entropy(logits.float().flatten(0, 1), target.flatten()), [x, model.head.weight]

    seconds = {"embedding": timed(embedding), "head + loss": timed(head_and_loss)}
    kinds: dict[bool, tuple[float, float]] = {}
    for i in range(model_cfg.n_layers):
        moe = i >= model_cfg.n_dense_layers
        if moe not in kinds:
            kinds[moe] = timed(block_of(i))
        seconds[f"layer {i} ({'MoE' if moe else 'dense'})"] = kinds[moe]
    return seconds
