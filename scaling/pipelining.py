"""train.parallel=pipeline: one run's layers split over its processes as pipeline stages, trained through
torch.distributed.pipelining (1F1B; interleaved 1F1B with train.pipeline_vpp > 1), the split given as a layout
string or computed by scaling/layout (even or balanced).

Every rank keeps a replica of the whole model, but computes only its stage's modules in the schedule; one
all-reduce then gives every rank the whole gradient (a rank's stage holds gradients, the others zeros), and every
rank takes the same optimizer step. So checkpoints, evaluation, resume and the record are the single-process
run's (to float tolerance: the micro-batches' sums are added in another order), and the step's pipeline time is
what the layout's schedule simulation predicts. What this does not do is save memory: a memory-saving pipeline is
the engines' job (Megatron-Core, torchtitan, with the layout `scaling layout` prints); this one trains the sweep's
cells through a real pipeline to measure a split's step time and check that it changes nothing else. An MoE
layer's routing losses join its micro-batch's backward on its own stage (_WithLoss), and its expert loads, counted
where it runs, are summed over the ranks for the bias update and the record, as under DDP.

Per-stage forward and backward seconds (each stage's compute of its micro-batches, without the waits) are timed
and recorded with the step's pipeline seconds (results.pipeline).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def split_of(spec: str, model_cfg, stages: int, vpp: int, seconds: dict | None = None):
    """The layout.split.Split of `spec`: 'even', 'balanced' (scaling/layout, on measured unit seconds when given,
    else estimated costs), or a Megatron-style layout string ('Et*2|t*2|t*2L')."""
    from scaling.layout import engines
    from scaling.layout.split import Split, balanced_split, even_split
    from scaling.layout.units import pipeline_units, with_measured

    units = pipeline_units(model_cfg, compute_bytes=4)
    pp = stages // vpp
    if spec == "even":
        return even_split(units, pp, vpp), units
    if spec == "balanced":
        if seconds:
            units = with_measured(units, seconds, 1e12)
        return balanced_split(units, pp, vpp), units
    letters = engines.parse_megatron_layout(spec)
    problems = engines.check_megatron_layout(spec, pp, model_cfg.n_layers)
    if problems or len(letters) != stages:
        raise ValueError(f"train.pipeline_split={spec!r}: " + ("; ".join(problems) or
                         f"{len(letters)} stages for {stages} (processes x train.pipeline_vpp)"))
    out, at = [], 0
    for s in letters:
        out.append(tuple(range(at, at + len(s))))
        at += len(s)
    return Split(tuple(out), pp), units


class _WithLoss(torch.autograd.Function):
    """x unchanged forward; backward, a gradient of 1 for `loss` too: a stage's routing losses (z-loss, the
    balancing loss) join its micro-batch's loss without reaching the last stage (as Megatron-Core's
    MoEAuxLossAutoScaler does)."""

    @staticmethod
    def forward(ctx, x, loss):
        ctx.save_for_backward(loss)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_x):
        (loss,) = ctx.saved_tensors
        return grad_x, torch.ones_like(loss)


class StageModule(nn.Module):
    """The modules of one pipeline stage, shared with the replica (the same parameters): the embedding on the first
    stage, blocks [first, end), the final norm and head on the last."""

    def __init__(self, model, first_block: int, end_block: int, embed: bool, head: bool):
        super().__init__()
        self.embed = model.embed if embed else None
        self.blocks = nn.ModuleList(model.blocks[first_block:end_block])
        self.norm, self.head = (model.norm, model.head) if head else (None, None)

    def forward(self, x):
        if self.embed is not None:
            x = self.embed(x)
        for block in self.blocks:
            x = block(x)
            ffn = block.ffn
            if hasattr(ffn, "z_loss") and self.training:
                extra = ffn.cfg.aux_loss_coef * ffn.aux_loss + ffn.cfg.z_loss_coef * ffn.z_loss
                if extra.requires_grad:
                    x = _WithLoss.apply(x, extra)
        if self.head is not None:
            x = self.head(self.norm(x))
        return x


@dataclass
class _Timer:
    """Forward and backward seconds of one pipeline stage: its forward_one_chunk and backward_one_chunk (the
    compute of one micro-batch, what the schedule calls), wrapped and summed until read."""

    forward_s: float = 0.0
    backward_s: float = 0.0

    def attach(self, stage) -> None:
        stage.forward_one_chunk = self._timed(stage.forward_one_chunk, "forward_s")
        stage.backward_one_chunk = self._timed(stage.backward_one_chunk, "backward_s")

    def _timed(self, call, total: str):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                setattr(self, total, getattr(self, total) + time.perf_counter() - t0)

        return timed


class Pipeline:
    """This rank's stages of a run's pipeline and its schedule."""

    def __init__(self, model, split, units, rank: int, world: int, device, microbatches: int, layout: str,
                 unit_seconds: dict | None):
        from torch.distributed.pipelining import PipelineStage

        self.rank, self.world, self.microbatches = rank, world, microbatches
        self.layout, self.unit_seconds = layout, unit_seconds  # recorded: the split, what a balanced one weighed
        self.stages_total = len(split.stages)
        self.timers, stages = [], []
        layers = [sum(units[i].kind == "t" for i in stage) for stage in split.stages]
        for k in range(rank, self.stages_total, world):  # this rank's virtual stages (Megatron's order)
            first = sum(layers[:k])
            module = StageModule(model, first, first + layers[k], embed=k == 0, head=k == self.stages_total - 1)
            stage = PipelineStage(module, k, self.stages_total, device)
            timer = _Timer()
            timer.attach(stage)
            stage.forward_one_chunk = self._counting_loads(stage.forward_one_chunk)
            self.timers.append(timer)
            stages.append(stage)
        self.last = self.stages_total - 1 in range(rank, self.stages_total, world)
        self.first = rank == 0

        self._stages, self._schedules = stages, {}
        self.moe = list(model.moe_layers)
        self.step_loads = [torch.zeros_like(m.load_E) for m in self.moe]
        self.step_s = 0.0
        self.steps = 0

    def _counting_loads(self, forward):
        """forward_one_chunk, adding the expert loads it counts to this step's (the schedule's own forward of a
        micro-batch; the stage's first-step shape inference runs the module too, and must not count)."""
        def counted(*args, **kwargs):
            before = [m.load_E.clone() for m in self.moe]
            try:
                return forward(*args, **kwargs)
            finally:
                for acc, m, b in zip(self.step_loads, self.moe, before, strict=True):
                    acc += m.load_E - b

        return counted

    def schedule(self, microbatches: int):
        """The schedule for `microbatches` (a run's last batch may be shorter: its own schedule, on the same
        stages)."""
        from torch.distributed.pipelining import Schedule1F1B, ScheduleInterleaved1F1B

        def loss_fn(logits_BTV, y_BT):
            return F.cross_entropy(logits_BTV.float().flatten(0, 1), y_BT.flatten())

        if microbatches not in self._schedules:
            if len(self._stages) == 1:
                self._schedules[microbatches] = Schedule1F1B(self._stages[0], microbatches, loss_fn=loss_fn)
            else:
                self._schedules[microbatches] = ScheduleInterleaved1F1B(self._stages, microbatches, loss_fn=loss_fn)
        return self._schedules[microbatches]

    def run(self, x_BT: torch.Tensor, y_BT: torch.Tensor, microbatches: int) -> float:
        """One step's forward and backward over `microbatches` equal micro-batches of the batch: gradients land on
        this rank's stage parameters (scaled by 1 / micro-batches: the batch's mean loss), each MoE layer's loads of
        the step in `step_loads` (zeros for layers on other ranks); returns the batch's mean loss on the rank
        holding the last stage, 0 elsewhere. Only full steps are timed (a last, shorter batch is
        left out of step_s)."""
        losses: list = []
        schedule = self.schedule(microbatches)
        start = [m.load_E.clone() for m in self.moe]
        for acc in self.step_loads:
            acc.zero_()
        t0 = time.perf_counter()
        if self.first and self.last:
            schedule.step(x_BT, target=y_BT, losses=losses)
        elif self.first:
            schedule.step(x_BT)
        elif self.last:
            schedule.step(target=y_BT, losses=losses)
        else:
            schedule.step()
        if microbatches == self.microbatches:
            self.step_s += time.perf_counter() - t0
            self.steps += 1
        for m, s, acc in zip(self.moe, start, self.step_loads, strict=True):
            m.load_E.copy_(s + acc)  # what the micro-batches counted, nothing else
        return float(torch.stack([loss.detach() for loss in losses]).mean()) if losses else 0.0

    def timings(self) -> list[float]:
        """[step seconds, then forward and backward seconds of each of this rank's stages], means per step."""
        n = max(1, self.steps)
        return [self.step_s / n] + [x / n for t in self.timers for x in (t.forward_s, t.backward_s)]
