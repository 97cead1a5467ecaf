"""Fully sharded data parallelism for one run (`train.parallel=fsdp`): torch's FSDP2 (`fully_shard`) on every
transformer block and on the root, and the sharded checkpoints such a run resumes from.

Each rank keeps 1/N of every parameter, its gradient and its AdamW state (dim 0 of each tensor; uneven splits are
padded by FSDP). A block's parameters are all-gathered just before it runs and freed after (its forward and its
backward), so an MoE layer's experts are whole again, one stacked tensor per layer, when the grouped matmul
sees them. Gradients are summed (reduce-scatter) across ranks after the backward pass; as with DDP
(distributed.py) each rank's loss is weighted by its share of the global batch's rows, so the update is the
single-process update. On a GPU the blocks compute in bf16 (FSDP's mixed precision: bf16 parameters for compute,
fp32 gradient reductions, fp32 master parameters and optimizer state); on the CPU (gloo) in fp32.

Checkpoints: every rank writes its own shard, `<run_id>.shards/step-<N>/rank-<r>-of-<W>.pt` (plain tensors and
numbers, read back with torch.load(weights_only=True)); once every rank has written, rank 0 points `latest` at
that step and removes older steps, so a kill at any moment leaves one complete checkpoint. A run resumes on the
same number of processes (a shard holds that rank's slice only). torch.distributed.checkpoint is not used for
this: its metadata file is read back with plain pickle, which runs whatever code a crafted file names.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from scaling import store

LATEST = "latest"
"""The file in a shards folder naming the last complete step folder."""


def shard(model, mixed_precision: bool) -> None:
    """Shard `model` (a Transformer) in place over the default process group: each block, then the root (the
    embedding, the final norm and the head stay gathered from the forward pass to the end of the backward)."""
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if mixed_precision \
        else MixedPrecisionPolicy()
    for block in model.blocks:
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)  # a sum: each rank's loss already carries its share of the rows
            module.set_force_sum_reduction_for_comms(True)  # plain SUM (gloo has no pre-multiplied sum)


def full_value(t) -> float:
    """A scalar that may be a DTensor (e.g. the total gradient norm of sharded gradients) as a float."""
    from torch.distributed.tensor import DTensor

    return float(t.full_tensor() if isinstance(t, DTensor) else t)


def _local(t):
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def _shard_name(rank: int, world: int) -> str:
    return f"rank-{rank}-of-{world}.pt"


def save(folder: Path, ranks, model, optimizer, state: dict) -> None:
    """Every rank writes its shard of the model and optimizer (and the training state) for `state['step']`; rank 0
    then makes it the latest and removes older steps. Collective: every rank calls it at the same step."""
    import torch.distributed as dist

    step_dir = folder / f"step-{state['step']}"
    payload = {"model": {k: _local(v).clone() for k, v in model.state_dict().items()},
               "optimizer": _local_optimizer_state(optimizer), "state": state,
               "world": ranks.world, "rank": ranks.rank}
    store.atomic_write(step_dir / _shard_name(ranks.rank, ranks.world), lambda f: torch.save(payload, f))
    dist.barrier()  # every shard of this step is on disk
    if ranks.main:
        store.atomic_write_text(folder / LATEST, step_dir.name + "\n")
        for old in folder.glob("step-*"):
            if old.name != step_dir.name:
                shutil.rmtree(old, ignore_errors=True)


def _local_optimizer_state(optimizer) -> dict:
    sd = optimizer.state_dict()
    return {"state": {i: {k: _local(v).clone() if torch.is_tensor(v) else v for k, v in s.items()}
                      for i, s in sd["state"].items()},
            "param_groups": sd["param_groups"]}


def load(folder: Path, ranks, model, optimizer, device, run_id: str) -> dict | None:
    """This rank's training state from the latest complete step (its shard loaded into the model and optimizer in
    place), or None when the run has no sharded checkpoint. A checkpoint from another number of processes, or an
    unreadable one: StoreError naming the fix."""
    latest = folder / LATEST
    if not latest.exists():
        return None
    step_name = latest.read_text().strip()
    path = folder / step_name / _shard_name(ranks.rank, ranks.world)
    if not path.exists():
        saved = sorted(p.name for p in (folder / step_name).glob("rank-*.pt"))
        raise store.StoreError(
            f"sharded checkpoint {folder / step_name} was written by another number of processes "
            f"({', '.join(saved) or 'no shards'}; "
            f"this run has {ranks.world}): resume run {run_id} with as many processes as saved it "
            f"(launcher.gpus_per_run), or move {folder} aside to restart it from step 0")
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
        for key, target in model.state_dict().items():
            _local(target).copy_(payload["model"][key])
        optimizer.load_state_dict(_global_optimizer_state(optimizer, payload["optimizer"]))
    except Exception as e:
        raise store.StoreError(
            f"sharded checkpoint {path} cannot be loaded ({type(e).__name__}: {str(e).splitlines()[0][:200]}): "
            f"move {folder} aside to restart run {run_id} from step 0") from None
    return payload["state"]


def _global_optimizer_state(optimizer, saved: dict) -> dict:
    """The saved local optimizer state with each tensor that belongs to a sharded parameter wrapped back into a
    DTensor laid out like that parameter."""
    from torch.distributed.tensor import DTensor

    params = [p for group in optimizer.param_groups for p in group["params"]]
    state = {}
    for i, s in saved["state"].items():
        p = params[int(i)]
        state[i] = {k: DTensor.from_local(v, p.device_mesh, p.placements, run_check=False, shape=p.shape,
                                          stride=p.stride())
                    if isinstance(p, DTensor) and torch.is_tensor(v) and v.dim() > 0 else v
                    for k, v in s.items()}
    return {"state": state, "param_groups": saved["param_groups"]}


def remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
