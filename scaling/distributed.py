"""Data parallelism for one run over several processes (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK): NCCL on GPUs,
gloo on CPU. Every rank holds the whole model; each trains on its share of the rows of every global batch (the
same batches as a single process); gradients are summed across ranks after the backward pass, so the update is
the single-process update. One collective per step also carries the loss and the stop / checkpoint requests, so
every rank stops, checkpoints and detects divergence at the same step. No compute/communication overlap: meant
for the larger rungs of a sweep, not for peak multi-GPU throughput.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass
class Ranks:
    rank: int
    world: int
    local_rank: int

    @property
    def main(self) -> bool:
        return self.rank == 0

    def rows(self, n_rows: int) -> slice:
        """This rank's rows of a global batch of n_rows (none when a last, partial batch has fewer rows than
        ranks)."""
        return slice(self.rank, n_rows, self.world)


def setup(device_spec: str) -> tuple[Ranks | None, torch.device | None]:
    """Join the process group when launched by torchrun with WORLD_SIZE > 1; (None, None) otherwise."""
    world = int(os.environ.get("WORLD_SIZE") or 1)
    if world <= 1:
        return None, None
    import torch.distributed as dist

    ranks = Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK") or 0))
    use_cuda = device_spec != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(ranks.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return ranks, torch.device(f"cuda:{ranks.local_rank}" if use_cuda else "cpu")


def sum_gradients(params: list[torch.Tensor]) -> None:
    """Sum every parameter's gradient across ranks, in one flat buffer (a missing gradient counts as zeros)."""
    import torch.distributed as dist

    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        n = p.grad.numel()
        p.grad.copy_(flat[offset: offset + n].view_as(p.grad))
        offset += n


def sum_(t: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    dist.all_reduce(t)
    return t


def teardown(clean: bool) -> None:
    """Leave the process group; after a clean finish, together (a barrier: no rank tears down while another is
    still in a collective). After an exception the other ranks may be gone: no barrier."""
    import torch.distributed as dist

    if dist.is_initialized():
        if clean:
            dist.barrier()
        dist.destroy_process_group()
