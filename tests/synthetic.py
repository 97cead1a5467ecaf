"""Synthetic runs (no training) drawn from a known lr law: as fit inputs (`synthetic_sweep`) and as records in a
results store, written exactly as `scaling sweep` writes them, loss curves included (`write_sweep`)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from scaling import store
from scaling.config import RunConfig, to_dict
from scaling.fit.inputs import Runs
from scaling.flops import count

M = 1_185_792
"""FLOPs per token of the default tiny MoE (tests/test_cli.py checks it against flops.py)."""


def loss_at(C: float, lr: float, a: float = 5.07, b: float = -0.26) -> float:
    return 1.2 + 80.0 * C**-0.15 + 0.12 * np.log(lr / (a * C**b)) ** 2


def write_sweep(root, sweep: str, budgets, lrs, seeds=(0, 1), noise: float = 0.02, seed: int = 0,
                laws: str | None = None) -> list[dict]:
    """Completed records of `sweep` under `root` (and its plan.json, naming `laws` when given)."""
    rng = np.random.default_rng(seed)
    records = []
    for C in budgets:
        tokens = int(C / M)
        for lr in lrs:
            for s in seeds:
                cfg = to_dict(RunConfig(budget_flops=C, seed=s, sweep=sweep))
                cfg["train"]["lr"], cfg["train"]["batch_size"] = lr, 8
                rid = f"{sweep}-{C:.0e}-{lr:.2e}-{s}".replace("+", "")
                final = loss_at(C, lr) + rng.normal(0, noise)
                steps = max(2, tokens // 2048)
                curve = [{"step": k, "tokens": k * 2048, "train_loss": final + 3.0 * (1 - k / steps) ** 2,
                          "smoothed_loss": final + 3.0 * (1 - k / steps) ** 2, "lr": lr, "grad_norm": 1.0}
                         for k in np.unique(np.linspace(1, steps, 8).astype(int))]
                counts = count(RunConfig().model)  # the records' own model, so every convention agrees with it
                derived = {"params_active_non_embedding": counts.params_active_non_embedding,
                           "params_non_embedding": counts.params_non_embedding,
                           "tokens": tokens, "flops_per_token": counts.flops_per_token,
                           "budget_flops": C, "batch_tokens": 2048, "activation_ratio": 0.25, "granularity": 1.0,
                           "seq_len": 256, "epochs": tokens / 12_000_000, "data_fingerprint": "synthetic"}
                rec = store.new_record(rid, sweep, f"C{C:.0e}-lr{lr:.1e}-s{s}", cfg, derived, {})
                rec.update(status="completed", results={"val_loss": final, "curve": curve, "tokens_per_s": 5e4,
                                                        "mfu": 0.012})
                store.write_record(store.record_path(root, sweep, rid), rec)
                records.append(rec)
    plan = store.sweep_dir(root, sweep) / "plan.json"
    store.atomic_write_text(plan, json.dumps({"sweep": sweep, "laws": laws, "cells": []}))
    return records


A_LR, B_LR = 5.07, -0.26
"""The lr law measured on this project's tiny MoE (issue 11): lr* = 5.07 C^-0.26."""


def synthetic_sweep(seed: int, budgets=(1e11, 3e11, 1e12), n_lr: int = 5, seeds: int = 2,
                    sigma: tuple[float, float] = (0.02, 0.09), curvature: float = 0.12) -> Runs:
    """An lr sweep as the demo runs it: at each budget, n_lr learning rates x2 apart around the true optimum
    (the grid's centre off by up to x1.65 either way), `seeds` runs each; loss = L(C) + curvature (ln lr/lr*)^2 plus
    Gaussian noise whose sd, drawn per sweep from `sigma`, spans the seed-to-seed spread measured here
    (0.02-0.09 nats)."""
    rng = np.random.default_rng(seed)
    sd = rng.uniform(*sigma)
    rows = []
    for C in budgets:
        lr_star = A_LR * C**B_LR
        lrs = lr_star * np.exp(rng.uniform(-0.5, 0.5)) * 2.0 ** (np.arange(n_lr) - (n_lr - 1) / 2)
        for lr in lrs:
            for s in range(seeds):
                loss = 1.5 + 300 * C**-0.2 + curvature * np.log(lr / lr_star) ** 2 + rng.normal(0, sd)
                rows.append({"params": 1.3e5, "tokens": C / 1.2e6, "flops": C, "budget": C, "loss": loss, "lr": lr,
                             "batch_tokens": 2048.0, "family": "A0.25-G1", "seed": s})
    return Runs(df=pd.DataFrame(rows), source=f"synthetic {seed}")


def write_precision_sweep(root, sweep: str = "precision_cpu", budgets=(1e11, 3e11, 1e12), seeds=(0, 1),
                          seed: int = 0) -> list[dict]:
    """Completed records of a precision sweep (bf16 / fp8 x QK-norm on / off), as `scaling sweep` writes them with
    train.diagnostics_every: FP8 costing 0.01 nats, and without QK-norm logits and QKV gradient underflow growing
    over training (more in the first layer)."""
    rng = np.random.default_rng(seed)
    records = []
    for C in budgets:
        tokens = int(C / M)
        steps = max(4, tokens // 2048)
        for qk_norm in (True, False):
            for s in seeds:
                base = loss_at(C, 1.6e-2) + rng.normal(0, 0.02)
                for precision in ("bf16", "fp8"):
                    cfg = to_dict(RunConfig(budget_flops=C, seed=s, sweep=sweep))
                    cfg["train"].update(lr=1.6e-2, batch_size=8, precision=precision, diagnostics_every=steps // 4)
                    cfg["model"]["qk_norm"] = qk_norm
                    qk = "qknorm" if qk_norm else "noqknorm"
                    rid = f"{sweep}-{C:.0e}-{precision}-{qk}-{s}".replace("+", "")
                    final = base + (0.01 if precision == "fp8" else 0.0) + rng.normal(0, 0.003)
                    diagnostics = []
                    for k in range(1, 5):
                        step = k * (steps // 4)
                        grow = 0.0 if qk_norm else 0.02 * k * (C / 1e11) ** 0.3
                        gemms = [{"layer": layer, "gemm": gemm, "kind": kind,
                                  "format": "e5m2" if kind == "grad_output" else "e4m3",
                                  "rel_error": 0.053 if kind == "grad_output" else 0.026,
                                  "underflow": grow / (1 + layer) if (gemm, kind) == ("attn.qkv", "grad_output")
                                  else 1e-5}
                                 for layer in (0, 1) for gemm in ("attn.qkv", "attn.out", "experts.gate_up")
                                 for kind in ("activation", "weight", "grad_output")]
                        logit = 4.0 + (0 if qk_norm else 10.0 * k * (C / 1e11) ** 0.3)
                        diagnostics.append({"step": step, "scaling": "tensorwise", "gemms": gemms,
                                            "attn_logit_max": [logit, logit / 2],
                                            "qkv_grad_underflow": [grow, grow / 2]})
                    derived = {"params_active_non_embedding": 132_096, "params_non_embedding": 460_096,
                               "tokens": tokens, "flops_per_token": {"M": M, "6N_total": 6 * 460_096},
                               "budget_flops": C, "batch_tokens": 2048, "activation_ratio": 0.25, "granularity": 1.0,
                               "seq_len": 256, "epochs": tokens / 12_000_000, "data_fingerprint": "synthetic"}
                    rec = store.new_record(rid, sweep, f"C{C:.0e}-lr1.6e-2", cfg, derived,
                                           {"precision": {"precision": precision}})
                    rec.update(status="completed", results={"val_loss": final, "curve": [], "diagnostics": diagnostics})
                    store.write_record(store.record_path(root, sweep, rid), rec)
                    records.append(rec)
    return records
