"""A stand-in for a team's own trainer (a test fixture for `launcher=command`): its own argument parser, its own
checkpoints, no import of scaling. It "trains" by stepping a synthetic loss with a known optimal learning rate,
lr* = 5.07 C^-0.26, saves its step to --checkpoint-dir every step (so a killed run resumes there), and writes the
result JSON of the contract in scaling/sweep/command.py."""

import argparse
import json
import math
import os
import random
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lr", type=float, required=True)
    ap.add_argument("--budget", type=float, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--step-seconds", type=float, default=0.0)
    args = ap.parse_args()
    os.makedirs(args.ckpt, exist_ok=True)
    state_file = os.path.join(args.ckpt, "state.json")
    start = 0
    if os.path.exists(state_file):
        with open(state_file) as f:
            start = json.load(f)["step"]
        print(f"resuming at step {start}", flush=True)
        with open(os.path.join(args.ckpt, "resumed"), "a") as f:
            f.write(f"{start}\n")
    steps = min(args.steps, 20)
    for step in range(start, steps):
        time.sleep(args.step_seconds)
        with open(state_file + ".tmp", "w") as f:
            json.dump({"step": step + 1}, f)
        os.replace(state_file + ".tmp", state_file)
    lr_star = 5.07 * args.budget ** -0.26
    noise = random.Random(f"{args.seed}-{args.budget}-{args.lr}").gauss(0, 0.005)
    loss = 1.2 + 80.0 * args.budget ** -0.15 + 0.12 * math.log(args.lr / lr_star) ** 2 + noise
    curve = [{"step": s, "val_loss": loss + 0.5 / s} for s in (5, 10, steps)]
    with open(args.out + ".tmp", "w") as f:
        json.dump({"val_loss": loss, "tokens": args.steps * 2048, "curve": curve}, f)
    os.replace(args.out + ".tmp", args.out)


if __name__ == "__main__":
    main()
