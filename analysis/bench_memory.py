"""Memory and step time of one training process, unsharded against FSDP (one rank), with the memory plan's
estimate beside the measured peak (scaling/memory.py). On a GPU the peak is torch.cuda.max_memory_allocated
(bf16 compute, as a run trains); on the CPU no allocator peak is measured (the estimate and the step time are
printed, to check the script).

    python analysis/bench_memory.py                       # default model
    python analysis/bench_memory.py model.d_model=1024 model.n_layers=8 train.batch_size=16 --steps 10
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="run config overrides (model.*, train.batch_size)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps after 2 warm-up steps")
    args = parser.parse_args()

    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    from scaling import memory, sharding
    from scaling.compose import compose
    from scaling.model import build_model

    run = compose(args.overrides)
    m, rows = run.model, run.train.batch_size
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group("nccl" if cuda else "gloo", rank=0, world_size=1)
    print(f"{'mode':8s} {'ms/step':>9s} {'peak GiB':>9s} {'plan GiB':>9s}   model d{m.d_model} L{m.n_layers} "
          f"E{m.n_experts} k{m.top_k}, {rows} rows x {m.seq_len}, {device}")
    for mode in ("single", "fsdp"):
        torch.manual_seed(0)
        model = build_model(m).to(device)
        if mode == "fsdp":
            sharding.shard(model, mixed_precision=cuda)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        x = torch.randint(0, m.vocab_size, (rows, m.seq_len), device=device)
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        times = []
        for i in range(2 + args.steps):
            t0 = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                logits = model(x)
            F.cross_entropy(logits.float().flatten(0, 1), x.flatten()).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if cuda:
                torch.cuda.synchronize()
            if i >= 2:
                times.append(time.perf_counter() - t0)
        peak = torch.cuda.max_memory_allocated() / memory.GIB if cuda else float("nan")
        plan = memory.need(m, rows, 1, "ddp", cuda).total / memory.GIB
        times.sort()
        print(f"{mode:8s} {1e3 * times[len(times) // 2]:9.1f} {peak:9.2f} {plan:9.2f}", flush=True)
        del model, opt
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
