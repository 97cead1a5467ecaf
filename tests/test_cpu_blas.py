"""scaling.cpu_blas: when MKL is switched to its AVX-512 kernels, and that training gives the same numbers."""

import ctypes
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scaling import cpu_blas

AMD_AVX512 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse avx2 avx512f avx512bw\n"
AMD_AVX2 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse avx2 fma\n"
INTEL = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse avx2 avx512f\n"


def test_reads_vendor_and_flags_of_the_first_processor():
    vendor, flags = cpu_blas.cpu_vendor_and_flags(AMD_AVX512 + "\nprocessor\t: 1\nvendor_id\t: Other\nflags\t: x\n")
    assert vendor == "AuthenticAMD"
    assert {"avx512f", "avx2"} <= flags and "x" not in flags


@pytest.mark.parametrize("cpuinfo, switch, torch_imported, expected", [
    (AMD_AVX512, None, False, None),
    (AMD_AVX512, "1", False, None),
    (AMD_AVX512, "0", False, "SCALING_MKL_AVX512=0"),
    (AMD_AVX512, "off", False, "SCALING_MKL_AVX512=off"),
    (AMD_AVX512, None, True, "torch was imported before scaling"),
    (AMD_AVX2, None, False, "no AVX-512"),
    (INTEL, None, False, "GenuineIntel CPU"),
    ("", None, False, "unknown CPU"),
])
def test_decides_only_for_amd_cpus_with_avx512_before_torch(cpuinfo, switch, torch_imported, expected):
    why_not = cpu_blas.decide(cpuinfo, switch, torch_imported)
    if expected is None:
        assert why_not is None
    else:
        assert expected in why_not


needs_cc = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler")


@needs_cc
def test_builds_a_shim_that_says_intel(tmp_path):
    path, why_not = cpu_blas.build_shim(tmp_path)
    assert why_not is None and path.parent == tmp_path
    lib = ctypes.CDLL(str(path))  # RTLD_LOCAL: this process's MKL is left as it is
    assert lib.mkl_serv_intel_cpu_true() == 1


def test_a_missing_compiler_is_a_reason_not_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", "no-such-compiler")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert "no C compiler" in cpu_blas.build_shim(tmp_path)[1]


PLANTED = """
#include <stdio.h>
#include <stdlib.h>
__attribute__((constructor)) static void planted(void) {
    FILE *f = fopen(getenv("PLANTED_MARKER"), "w"); if (f) { fputs("ran", f); fclose(f); }
}
int mkl_serv_intel_cpu_true(void) { return 1; }
"""


@needs_cc
def test_no_file_another_user_could_plant_is_ever_loaded(tmp_path):
    """A library planted where the shim used to be cached (and a symlink to it) never runs: not on `import
    scaling`, not in `scaling fit --help`, not when a training entry point enables the shim (it builds its own
    copy in a private folder, then removes the folder)."""
    src, lib = tmp_path / "planted.c", tmp_path / "planted.so"
    src.write_text(PLANTED)
    subprocess.run([shutil.which("cc") or "gcc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    cache, tmp = tmp_path / "cache", tmp_path / "tmp"
    (cache / "native").mkdir(parents=True)
    tmp.mkdir()
    for digest in ("23328033ab94", "0123456789ab"):  # the old cache name (sha256 of the source), another
        (cache / "native" / f"libscaling_mkl_intel_cpu_{digest}.so").write_bytes(lib.read_bytes())
    (cache / "native" / "libscaling_mkl_intel_cpu.so").symlink_to(lib)
    marker = tmp_path / "marker"
    env = {**os.environ, "SCALING_CACHE": str(cache), "PLANTED_MARKER": str(marker), "TMPDIR": str(tmp),
           "SCALING_MKL_AVX512": "1"}
    for code in ("import scaling.fit.inputs", "import scaling.cli",
                 "from scaling import cpu_blas; cpu_blas.enable(); import torch"):
        subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    subprocess.run([sys.executable, "-m", "scaling.cli", "fit", "--help"], env=env, check=True, timeout=120,
                   capture_output=True)
    assert not marker.exists()
    assert list(tmp.iterdir()) == []  # the private build folder is gone


def test_import_scaling_loads_nothing():
    out = subprocess.run([sys.executable, "-c", "import scaling.fit.inputs, scaling.cli, scaling.cpu_blas as b; "
                          "print(b.state().reason)"], capture_output=True, text=True, check=True, timeout=120)
    assert "not checked" in out.stdout


CHILD = """
import json
import scaling.cpu_blas
scaling.cpu_blas.enable()
import torch
from scaling.config import ModelConfig
from scaling.model import build_model
from scaling.probe import train_step

torch.manual_seed(0)
a, b = torch.randn(300, 500), torch.randn(500, 200)
err = ((a @ b).double() - a.double() @ b.double()).abs().max().item()
model = build_model(ModelConfig(d_model=64, n_layers=2, n_heads=4, seq_len=64, vocab_size=256, n_experts=4,
                                top_k=2, d_expert=64))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
x = torch.randint(0, 256, (8, 65), generator=torch.Generator().manual_seed(1))
losses = []
def forward(ids):
    logits = model(ids)
    losses.append(torch.nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten()).item())
    return logits
step = train_step(forward, opt, x, model.update_expert_bias)
for _ in range(20):
    step()
print(json.dumps({"active": scaling.cpu_blas.state().active, "mm_err": err, "losses": losses}))
"""


def _train_in_child(switch: str, cache: Path) -> dict:
    env = {**os.environ, "SCALING_MKL_AVX512": switch, "SCALING_CACHE": str(cache)}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _switch_applies_here() -> bool:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return cpu_blas.decide(cpuinfo, None, False) is None


@needs_cc
@pytest.mark.skipif(not _switch_applies_here(), reason="not an AMD CPU with AVX-512: the switch is a no-op here")
def test_avx512_kernels_train_like_the_default_ones(tmp_path):
    """20 steps of a tiny MoE in two processes, MKL's AVX2 kernels against its AVX-512 ones: same losses."""
    default, fast = _train_in_child("0", tmp_path), _train_in_child("1", tmp_path)
    assert (default["active"], fast["active"]) == (False, True)
    assert fast["mm_err"] < 1e-4 and default["mm_err"] < 1e-4  # an fp32 product of 500 terms, against fp64
    assert fast["losses"][0] == pytest.approx(default["losses"][0], rel=1e-6)
    assert fast["losses"] == pytest.approx(default["losses"], rel=1e-4)
    assert fast["losses"][-1] < fast["losses"][0] - 0.5  # it learnt something: the comparison is not vacuous


def test_a_failing_compiler_is_a_reason_not_an_error(tmp_path, monkeypatch):
    fake = tmp_path / "cc"
    fake.write_text("#!/bin/sh\necho 'cc: fatal error: no input files' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    path, why = cpu_blas.build_shim(tmp_path)
    assert path is None and why == "building the shim failed: cc: fatal error: no input files"
