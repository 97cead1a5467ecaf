"""MKL's AVX-512 matmul kernels on AMD CPUs (`enable()`, called by the entry points that train, before torch loads).

torch's x86 CPU wheels do fp32 matmuls in Intel oneMKL, and MKL picks its kernels by CPU *vendor* first: on an AMD
CPU it runs its AVX2 kernels even where the CPU has AVX-512 (Zen 4 and later). On this project's 2-core AMD EPYC
(Zen 5), `torch.mm` reaches 200-210 GFLOP/s that way and 430-490 GFLOP/s on the AVX-512 kernels
(`python analysis/bench_blas.py`), so every CPU training step is about 1.5-2x slower than the hardware allows.

MKL asks one internal function, `mkl_serv_intel_cpu_true`, whether the CPU is Intel. A one-line shared library
defining it (returning 1), loaded with RTLD_GLOBAL before torch, is found first when torch's MKL calls it, and MKL
then picks kernels by the CPU's features (cpuid) as on an Intel CPU. Results stay fp32 (a different kernel, so the
last bits of sums may differ); tests/test_cpu_blas.py checks that training matches the AVX2 path.

Safe to load: the library is compiled by each process that enables it (about 0.04 s with the system C compiler,
the one torch.compile needs anyway) into a fresh private folder (mkdtemp: mode 0700, created by this process),
loaded from there and the folder removed. No file another user could plant or replace is ever loaded, and there is
no cached copy to go stale or corrupt. Only the training entry points call `enable()` (`scaling train`, `sweep`,
`bench`, sweep workers, torchrun cells, Slurm tasks); `import scaling` and the analysis commands load nothing.

`SCALING_MKL_AVX512=0` turns it off. `state()` says whether it is on and why (printed by `scaling bench`).
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

ENV_SWITCH = "SCALING_MKL_AVX512"
SHIM_SOURCE = "int mkl_serv_intel_cpu_true(void) { return 1; }\n"


@dataclass(frozen=True)
class BlasState:
    active: bool
    """Whether MKL was told to use its Intel (AVX-512) kernels in this process."""
    reason: str
    """Why (or why not), in words."""


_STATE = BlasState(False, "not checked (scaling.cpu_blas.enable() was not called)")


def state() -> BlasState:
    return _STATE


def cpu_vendor_and_flags(cpuinfo: str) -> tuple[str, set[str]]:
    """The vendor id and feature flags of the first processor in /proc/cpuinfo's text."""
    vendor, flags = "", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "vendor_id" and not vendor:
            vendor = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
        if vendor and flags:
            break
    return vendor, flags


def decide(cpuinfo: str, switch: str | None, torch_imported: bool) -> str | None:
    """None when the shim should be loaded, else the reason it should not."""
    if (switch or "").strip().lower() in ("0", "false", "no", "off"):
        return f"off ({ENV_SWITCH}={switch})"
    if torch_imported:
        return "off (torch was imported before scaling; import scaling first)"
    vendor, flags = cpu_vendor_and_flags(cpuinfo)
    if vendor != "AuthenticAMD":
        return f"not needed ({vendor or 'unknown'} CPU: MKL already picks its kernels by features)"
    if "avx512f" not in flags:
        return "not needed (this AMD CPU has no AVX-512)"
    return None


def build_shim(folder: Path) -> tuple[Path | None, str | None]:
    """Compile the shim into `folder` (which must be private to this process): (its path, None) on success, else
    (None, the reason)."""
    import shutil
    import subprocess

    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        return None, "no C compiler (cc/gcc) to build the shim; install gcc"
    src, out = Path(folder) / "shim.c", Path(folder) / "libscaling_mkl_intel_cpu.so"
    src.write_text(SHIM_SOURCE)
    try:
        done = subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", str(out), str(src)],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"building the shim failed ({e})"
    if done.returncode != 0 or not out.is_file():
        last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        return None, f"building the shim failed: {last}"
    return out, None


def enable() -> BlasState:
    """Load the shim when this is an AMD CPU with AVX-512 and torch is not imported yet; never raises. Built in a
    private temporary folder and loaded from there (see the module docstring); a second call does nothing."""
    import shutil
    import tempfile

    global _STATE
    if _STATE.active:
        return _STATE
    if platform.machine() not in ("x86_64", "AMD64"):
        _STATE = BlasState(False, f"not needed ({platform.machine()} CPU)")
        return _STATE
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text() if sys.platform == "linux" else ""
    except OSError:
        cpuinfo = ""
    why_not = decide(cpuinfo, os.environ.get(ENV_SWITCH), "torch" in sys.modules)
    if why_not is not None:
        _STATE = BlasState(False, why_not)
        return _STATE
    folder = None
    try:
        folder = tempfile.mkdtemp(prefix="scaling-mkl-")  # mode 0700, new, ours
        path, failed = build_shim(Path(folder))
        if failed is None:
            ctypes.CDLL(str(path), mode=os.RTLD_GLOBAL)
    except OSError as e:
        failed = f"loading the shim failed ({e})"
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)  # the loaded library stays mapped
    _STATE = BlasState(failed is None, "on (AMD CPU with AVX-512: MKL uses its AVX-512 kernels)" if failed is None
                       else f"off ({failed}); MKL runs its AVX2 kernels")
    return _STATE
