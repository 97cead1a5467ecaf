"""Benchmark: our MoE training step against Hugging Face's OLMoE and against our dense model of equal active FLOPs.

In one process, interleaved (every round times each variant in turn, the order rotated each round), medians with
min and max over rounds; fp32, batch 16 x 256 tokens, random init from configs (nothing is downloaded). Our
variants use fused AdamW (what scaling/train.py uses). HF runs twice: with torch's default AdamW (foreach), the
baseline of docs/notes/cpu_moe_perf.md and of the ratios `ours_vs_hf`, and with fused AdamW
(`*_same_optimizer`: the models alone compared).
Variants at each size:

- ours, eager and torch.compile'd (sorted dispatch on `torch._grouped_mm`, scaling/model/moe.py);
- HF `OlmoeForCausalLM` built from an `OlmoeConfig` of the same shape (transformers' default experts kernel),
  with default and with fused AdamW;
- our dense model with the same active FLOPs (one expert of width top_k x d_expert, no router), eager and compiled.

Everything runs in one process, so HF and ours share one BLAS: on an AMD CPU with AVX-512, MKL's AVX-512 kernels
(scaling/cpu_blas.py, on by default) speed HF's matmuls up as much as ours. `SCALING_MKL_AVX512=0 python
analysis/bench_moe.py` measures both on MKL's AVX2 kernels instead.

Sizes: small = d_model 128, 4 layers, 4 heads, 8 experts top-2, expert width 128; large = d_model 256, 6 layers,
4 heads, 16 experts top-2, expert width 256 (docs/notes/cpu_moe_perf.md measured HF at 14.7k and 4.2k tok/s).

    pip install transformers              # the baseline (not a dependency of the package)
    python analysis/bench_moe.py          # one table with the ratios
    python analysis/bench_moe.py --json   # {"ours_vs_hf": {"small": x, "large": y}, "ours_eager_vs_hf": ..., ...}
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

# isort: off
import scaling.cpu_blas  # first: it must act before torch loads MKL (AVX-512 kernels on AMD CPUs)

scaling.cpu_blas.enable()
import torch  # noqa: E402
# isort: on

from scaling.config import ModelConfig  # noqa: E402
from scaling.model import build_model  # noqa: E402
from scaling.probe import train_step  # noqa: E402

SIZES = {
    "small": {"d_model": 128, "n_layers": 4, "n_heads": 4, "n_experts": 8, "top_k": 2, "d_expert": 128,
              "rounds": 8, "steps": 4},
    "large": {"d_model": 256, "n_layers": 6, "n_heads": 4, "n_experts": 16, "top_k": 2, "d_expert": 256,
              "rounds": 6, "steps": 3},
}
BATCH, SEQ, VOCAB = 16, 256, 256


def ours(size: dict, dense: bool) -> ModelConfig:
    experts = {"n_experts": 1, "top_k": 1, "d_expert": size["top_k"] * size["d_expert"]} if dense else {
        "n_experts": size["n_experts"], "top_k": size["top_k"], "d_expert": size["d_expert"]}
    return ModelConfig(d_model=size["d_model"], n_layers=size["n_layers"], n_heads=size["n_heads"], seq_len=SEQ,
                       vocab_size=VOCAB, **experts)


def hf_olmoe(size: dict):
    from transformers import OlmoeConfig, OlmoeForCausalLM

    cfg = OlmoeConfig(vocab_size=VOCAB, hidden_size=size["d_model"], intermediate_size=size["d_expert"],
                      num_hidden_layers=size["n_layers"], num_attention_heads=size["n_heads"],
                      num_key_value_heads=size["n_heads"], num_experts=size["n_experts"],
                      num_experts_per_tok=size["top_k"], norm_topk_prob=False, max_position_embeddings=SEQ,
                      tie_word_embeddings=False, pad_token_id=0, eos_token_id=1, output_router_logits=False)
    return OlmoeForCausalLM(cfg)


def variants(size: dict, x_BT1: torch.Tensor) -> dict:
    """name -> a training-step callable, each with its own model and AdamW."""
    steps = {}
    for name, dense, compiled in (("ours", False, False), ("ours compiled", False, True),
                                  ("ours dense", True, False), ("ours dense compiled", True, True)):
        torch.manual_seed(0)
        model = build_model(ours(size, dense))
        forward = torch.compile(model) if compiled else model
        opt = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=True)  # as scaling/train.py
        steps[name] = train_step(forward, opt, x_BT1, model.update_expert_bias)
    for name, fused in (("HF OLMoE", False), ("HF OLMoE fused AdamW", True)):
        torch.manual_seed(0)
        hf = hf_olmoe(size)
        opt = torch.optim.AdamW(hf.parameters(), lr=3e-4, fused=fused)
        steps[name] = train_step(lambda ids, hf=hf: hf(input_ids=ids).logits, opt, x_BT1)
    return steps


def bench(size_name: str, log) -> dict:
    size = SIZES[size_name]
    x_BT1 = torch.randint(0, VOCAB, (BATCH, SEQ + 1))
    steps = variants(size, x_BT1)
    for name, step in steps.items():  # warm-up (compiles the compiled ones)
        t0 = time.perf_counter()
        for _ in range(3):
            step()
        log(f"{size_name}: {name} warmed up in {time.perf_counter() - t0:.1f} s")
    times = {name: [] for name in steps}
    names = list(steps)
    for r in range(size["rounds"]):
        for name in names[r % len(names):] + names[: r % len(names)]:  # rotate the order every round
            t0 = time.perf_counter()
            for _ in range(size["steps"]):
                steps[name]()
            times[name].append((time.perf_counter() - t0) / size["steps"])
    tokens = BATCH * SEQ
    return {name: {"tok_s": tokens / statistics.median(t), "tok_s_min": tokens / max(t),
                   "tok_s_max": tokens / min(t), "ms_step": 1e3 * statistics.median(t)} for name, t in times.items()}


def ratios(results: dict) -> dict:
    def r(a, b):
        return {s: round(results[s][a]["tok_s"] / results[s][b]["tok_s"], 3) for s in results}

    return {"ours_vs_hf": r("ours compiled", "HF OLMoE"), "ours_eager_vs_hf": r("ours", "HF OLMoE"),
            "moe_vs_dense": r("ours compiled", "ours dense compiled"), "moe_vs_dense_eager": r("ours", "ours dense"),
            "ours_vs_hf_same_optimizer": r("ours compiled", "HF OLMoE fused AdamW"),
            "ours_eager_vs_hf_same_optimizer": r("ours", "HF OLMoE fused AdamW"),
            "mkl_avx512": scaling.cpu_blas.state().active}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="Print the ratios as JSON instead of the table.")
    parser.add_argument("--sizes", default="small,large", help="Comma-separated: small, large.")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice).")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        import transformers  # noqa: F401
    except ImportError:
        sys.exit("bench_moe.py needs the baseline: pip install transformers")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    results = {s: bench(s, log) for s in args.sizes.split(",")}
    out = ratios(results)
    if args.json:
        print(json.dumps(out))
        return
    import transformers

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads, "
          f"fp32, batch {BATCH} x {SEQ} tokens; tokens/s median [min-max] over interleaved rounds; vs HF = vs HF "
          f"OLMoE with default AdamW\nCPU matmuls (scaling.cpu_blas): {scaling.cpu_blas.state().reason}")
    for s, res in results.items():
        hf = res["HF OLMoE"]["tok_s"]
        print(f"\n{s}: " + ", ".join(f"{k}={v}" for k, v in SIZES[s].items() if k not in ("rounds", "steps")))
        print(f"  {'variant':22s} {'tok/s':>8s} {'[min-max]':>17s} {'ms/step':>8s} {'vs HF':>6s}")
        for name, v in res.items():
            print(f"  {name:22s} {v['tok_s']:8,.0f} [{v['tok_s_min']:7,.0f}-{v['tok_s_max']:7,.0f}] "
                  f"{v['ms_step']:8.1f} {v['tok_s'] / hf:5.2f}x")
    print("\n" + json.dumps(out))


if __name__ == "__main__":
    main()
