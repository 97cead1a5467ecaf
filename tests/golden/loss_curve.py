"""The golden loss curves: 20 steps of the default tiny MoE and of the dense baseline, fixed seed, one thread.

`python tests/golden/loss_curve.py` prints the curves of this process as JSON (tests/test_train_golden.py runs it
once per MKL kernel set); `python tests/golden/loss_curve.py --write` rewrites loss_curves.json, which only a
deliberate change to the model, the data order or the optimizer should need (say so in the commit).
"""

import json
import os
import sys
import tempfile
from pathlib import Path

STEPS = 20
MODELS = {"moe": ["model=tiny_moe"], "dense": ["model=tiny_dense"]}
COMMON = ["seed=0", "train.threads=1", "train.log_every=1", "train.eval_every=0", "train.checkpoint_every=0",
          "data.val_tokens=2048", "wandb.mode=disabled", "sweep=golden"]
GOLDEN = Path(__file__).with_name("loss_curves.json")


def curves(extra: list[str] = (), models: tuple[str, ...] = tuple(MODELS)) -> dict:
    from scaling import cpu_blas

    cpu_blas.enable()  # as every training entry point (SCALING_MKL_AVX512 picks the kernel set)
    from scaling.compose import compose, with_updates
    from scaling.run import plan_run
    from scaling.train import train

    out = {"avx512_kernels": cpu_blas.state().active}
    with tempfile.TemporaryDirectory() as results:
        for name in models:
            run = compose(MODELS[name] + COMMON + list(extra) + [f"results_dir={results}"])
            plan = plan_run(run)
            run = with_updates(run, {"budget_flops": plan.counts.M * plan.batch_tokens * STEPS})
            record = train(run, show_progress=False, console=_quiet())
            out[name] = [p["train_loss"] for p in record["results"]["curve"]]
    return out


def _quiet():
    from rich.console import Console

    return Console(file=open(os.devnull, "w"))


if __name__ == "__main__":
    result = curves(sys.argv[2:] if len(sys.argv) > 1 and sys.argv[1] == "--extra" else [])
    if sys.argv[1:] == ["--write"]:
        import torch

        GOLDEN.write_text(json.dumps({"steps": STEPS, "torch": torch.__version__, **result}, indent=1) + "\n")
    print(json.dumps(result))
