"""A split in the engines' own terms, ready to paste.

Megatron-Core: `--pipeline-model-parallel-layout`, the stages in model order separated by `|`, each a run of unit
letters (E embedding, t decoder layer, m MTP, L loss with the output head), `x*n` for n of one letter and `(...|)*n`
for n identical stages; the stage count is a multiple of the pipeline size, the multiple being the virtual stages
per rank (Megatron reads stage k as rank k % P, chunk k // P). `parse_megatron_layout` reads such a string back
and `check_megatron_layout` applies Megatron's rules to it (E first and once, L last and once, every decoder layer
once, the MTP blocks after the decoder layers, all in one stage, a rank's last chunk).

torchtitan: `[parallelism]` with `pipeline_parallel_degree`, `pipeline_parallel_schedule` (1F1B or
Interleaved1F1B) and `module_fqns_per_model_part`, the modules of each stage by name (exact for any split); and,
where the split is even but for fewer layers on the first and last stages, the equivalent
`pipeline_parallel_layers_per_stage` with `pipeline_parallel_first_stage_less_layers` and `..._last_...`.
"""

from __future__ import annotations

import re

from scaling.layout.split import Split
from scaling.layout.units import Unit


def _run_length(letters: str) -> str:
    """'Ettt' -> 'Et*3'."""
    return "".join(ch if len(run) == 1 else f"{ch}*{len(run)}"
                   for run, ch in ((m.group(0), m.group(1)) for m in re.finditer(r"(.)\1*", letters)))


def megatron_layout(split: Split, units: list[Unit]) -> str:
    """The split as a `--pipeline-model-parallel-layout` string (runs of identical stages as `(...|)*n`)."""
    stages = ["".join(units[i].kind for i in stage) for stage in split.stages]
    out, k = [], 0
    while k < len(stages):
        run = 1
        while k + run < len(stages) and stages[k + run] == stages[k]:
            run += 1
        text = _run_length(stages[k])
        last = k + run == len(stages)
        if run > 1 and not last:
            out.append(f"({text}|)*{run}")
        elif run > 1:  # a final run: (s|)*(n-1) then s, so the string does not end in an empty stage
            out.append((f"({text}|)*{run - 1}" if run > 2 else f"{text}|") + text)
        else:
            out.append(text + ("" if last else "|"))
        k += run
    return "".join(out)


def parse_megatron_layout(layout: str) -> list[str]:
    """The stages of a layout string, each as its unit letters ('Et*3|(t*4|)*2tL' -> ['Ettt', 'tttt', 'tttt',
    'tL']), parsed by Megatron-Core's grammar: commas are cosmetic, `(...)*n` unrolls first, then `x*n`."""
    text = layout.replace(",", "")
    text = re.sub(r"\(([^)]+)\)\*(\d+)", lambda m: m.group(1) * int(m.group(2)), text)
    text = re.sub(r"(.)\*(\d+)", lambda m: m.group(1) * int(m.group(2)), text)
    stages = text.split("|")
    bad = set("".join(stages)) - set("EtmL")
    if bad:
        raise ValueError(f"layout {layout!r}: unknown unit letter(s) {''.join(sorted(bad))} (E, t, m, L)")
    return stages


def check_megatron_layout(layout: str, pp: int, num_layers: int, mtp_layers: int = 0) -> list[str]:
    """Megatron-Core's rules for a layout; the problems found (empty when it is valid)."""
    stages = parse_megatron_layout(layout)
    problems = []
    if len(stages) % pp:
        problems.append(f"{len(stages)} stages are not a multiple of the pipeline size {pp}")
        return problems
    vpp = len(stages) // pp
    flat = "".join(stages)
    if not flat.startswith("E") or flat.count("E") != 1:
        problems.append("the embedding (E) must come first, once")
    if not flat.endswith("L") or flat.count("L") != 1:
        problems.append("the loss (L) must come last, once")
    if flat.count("t") != num_layers:
        problems.append(f"{flat.count('t')} decoder layers (t), the model has {num_layers}")
    if flat.count("m") != mtp_layers:
        problems.append(f"{flat.count('m')} MTP layers (m), the model has {mtp_layers}")
    if "m" in flat and "t" in flat[flat.index("m"):]:
        problems.append("decoder layers must come before the MTP layers")
    with_mtp = [k for k, s in enumerate(stages) if "m" in s]
    if with_mtp and (len(with_mtp) > 1 or with_mtp[0] // pp != vpp - 1):
        problems.append("the MTP layers must be in one stage, the last virtual stage of its rank")
    return problems


def megatron_flags(split: Split, units: list[Unit]) -> list[str]:
    """The command-line flags for the split."""
    mtp = sum(u.kind == "m" for u in units)
    flags = [f"--pipeline-model-parallel-size {split.pp}",
             f"--pipeline-model-parallel-layout \"{megatron_layout(split, units)}\""]
    return flags + ([f"--mtp-num-layers {mtp}"] if mtp else [])


def torchtitan_fields(split: Split, units: list[Unit], microbatch_rows: int) -> dict:
    """The `[parallelism]` fields of the split (module_fqns_per_model_part exact; the layers-per-stage form too
    when the split is one)."""
    fields = {"pipeline_parallel_degree": split.pp,
              "pipeline_parallel_schedule": "1F1B" if split.vpp == 1 else "Interleaved1F1B",
              "pipeline_parallel_microbatch_size": microbatch_rows,
              "module_fqns_per_model_part": [[fqn for i in stage for fqn in units[i].fqns] for stage in split.stages]}
    layers = [sum(units[i].kind == "t" for i in stage) for stage in split.stages]
    mtp_last = all(units[i].kind != "m" for stage in split.stages[:-1] for i in stage)
    middle = layers[1:-1] if len(layers) > 2 else []
    per = max(layers)
    if mtp_last and len(layers) > 1 and all(n == per for n in middle) and layers[0] <= per and layers[-1] <= per:
        fields.update(pipeline_parallel_layers_per_stage=per,
                      pipeline_parallel_first_stage_less_layers=per - layers[0],
                      pipeline_parallel_last_stage_less_layers=per - layers[-1])
    return fields


def torchtitan_toml(fields: dict) -> str:
    """The fields as a `[parallelism]` TOML table."""
    import json

    lines = ["[parallelism]"]
    for key, value in fields.items():
        lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines)
