"""Entry point of one cell trained by several processes: `torchrun --standalone --nproc_per_node=N -m
scaling.sweep.run_cell CELL.json` (the launchers run it when gpus_per_run > 1; CELL.json holds the run config and
the claim its worker holds, store.run_file_path). Every rank trains its share
(scaling/distributed.py); rank 0 writes the record and checkpoints. Exit code 0 when the run completed, diverged,
or stopped on a scheduler's signal with a checkpoint saved (the record says which; a non-zero code would make
torchrun kill the other ranks while rank 0 writes), 1 when it failed."""

from __future__ import annotations

import json
import sys

from scaling.config import from_dict


def main(argv: list[str]) -> int:
    from scaling import cpu_blas

    cpu_blas.enable()  # before torch loads (AMD CPUs: MKL's AVX-512 kernels)
    from scaling.scheduler import Preempted, handle_signals
    from scaling.train import train

    if len(argv) != 1:
        print("usage: torchrun --standalone --nproc_per_node=N -m scaling.sweep.run_cell RUN.json", file=sys.stderr)
        return 2
    handle_signals()
    with open(argv[0]) as f:
        cell = json.load(f)  # {"run": the run config, "name": its cell name, "owner": the launching worker's claim}
    try:
        train(from_dict(cell["run"]), show_progress=False, owner=cell.get("owner"), name=cell.get("name"))
    except Preempted:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
