"""The layout in Megatron-Core's and torchtitan's terms: strings that parse back to the split, Megatron's rules."""

import pytest

from scaling.layout.engines import (
    check_megatron_layout,
    megatron_layout,
    parse_megatron_layout,
    torchtitan_fields,
)
from scaling.layout.split import Split
from scaling.layout.units import Unit


def units_of(kinds):
    names = iter(range(1000))
    out = []
    for k in kinds:
        fqns = {"E": ("tok_embeddings",), "L": ("norm", "output")}.get(k) or (f"x.{next(names)}",)
        out.append(Unit(k, k, fqns, 1.0, 2.0, 1, 0, 1.0))
    return out


def test_megatrons_documented_layouts_parse_as_its_docs_say():
    assert parse_megatron_layout("Et*3|(tt|)*29,m|L") == ["Ettt", *["tt"] * 29, "m", "L"]
    assert parse_megatron_layout("Et*3|(t*4|)*6t*3L") == ["Ettt", *["tttt"] * 6, "tttL"]
    assert check_megatron_layout("Et*3|(tt|)*29,m|L", 16, 61, 1) == []
    with pytest.raises(ValueError, match="unknown unit letter"):
        parse_megatron_layout("Et*3|x|L")


@pytest.mark.parametrize("stages", [
    ["Et", "tt", "tt", "tL"], ["Ettt", "tttL"], ["E", "tt", "tt", "tt", "t", "L"], ["Et", "tt", "tt", "tt", "tmL"],
    ["Ett", "tt", "tt", "t", "t", "t", "m", "L"]])
def test_a_split_written_as_a_layout_string_parses_back_to_itself(stages):
    kinds = "".join(stages)
    units = units_of(kinds)
    split, at = [], 0
    for s in stages:
        split.append(tuple(range(at, at + len(s))))
        at += len(s)
    text = megatron_layout(Split(tuple(split), pp=2), units)
    assert parse_megatron_layout(text) == stages, text


def test_megatrons_rules_are_applied():
    assert "multiple of the pipeline size" in check_megatron_layout("Et|t|tL", 2, 3)[0]
    assert any("embedding (E) must come first" in p for p in check_megatron_layout("tE|tL", 2, 2))
    assert any("loss (L) must come last" in p for p in check_megatron_layout("EtL|tL", 2, 2))
    assert any("3 decoder layers (t), the model has 4" in p for p in check_megatron_layout("Et|ttL", 2, 4))
    assert any("before the MTP" in p for p in check_megatron_layout("Etm|tL", 2, 2, 1))
    assert any("last virtual stage" in p for p in check_megatron_layout("Et|tm|t|tL", 2, 3, 1))


def test_torchtitan_names_each_stages_modules_and_the_uniform_form_when_it_is_one():
    units = units_of("Ettttttttt" + "L")
    split = Split(((0, 1, 2), (3, 4, 5, 6), (7, 8, 9, 10)), pp=3)
    fields = torchtitan_fields(split, units, 1)
    assert fields["module_fqns_per_model_part"][0] == ["tok_embeddings", "x.0", "x.1"]
    assert fields["module_fqns_per_model_part"][-1] == ["x.6", "x.7", "x.8", "norm", "output"]
    assert (fields["pipeline_parallel_layers_per_stage"], fields["pipeline_parallel_first_stage_less_layers"],
            fields["pipeline_parallel_last_stage_less_layers"]) == (4, 2, 1)
    assert fields["pipeline_parallel_schedule"] == "1F1B"
