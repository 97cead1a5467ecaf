"""A fit's files: where they go, and only those asked for."""

import json
from pathlib import Path

from synthetic import write_sweep

from scaling.advise.outputs import default_output_dir, write_fit_outputs
from scaling.fit.inputs import from_store
from scaling.fit.report import fit_all


def test_outputs_go_under_the_sweep_or_to_fit_for_other_sources(tmp_path):
    assert default_output_dir(tmp_path, "demo", None) == tmp_path / "demo" / "fit"
    assert default_output_dir(tmp_path, None, "runs.csv") == Path("fit")


def test_only_what_was_asked_is_written_and_fit_json_is_strict_json(tmp_path):
    write_sweep(tmp_path, "s", (1e11, 3e11, 1e12), (1e-3, 4e-3, 1.6e-2), seeds=(0,))
    runs = from_store(tmp_path, "s")
    report = fit_all(runs, n_boot=0, check=False)
    out = tmp_path / "out"
    written = write_fit_outputs(report, runs, out, recommendation=None, plots=False, verify=None)
    assert sorted(p.name for p in out.iterdir()) == ["fit.json"]
    assert set(written) == {"fit", "payload"}
    assert json.loads((out / "fit.json").read_text(), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    written = write_fit_outputs(report, runs, out, plots=False, verify={"budget_flops": 3e12})
    assert (out / "verify.yaml").exists() and written["verify_name"]
