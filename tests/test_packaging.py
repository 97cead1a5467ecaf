"""The wheel, as `pip install` gives it to a user outside the repo: every module and preset inside, and the
presets found from there (CI also installs it into a fresh virtual environment: `make test-wheel`)."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(REPO)], check=True, capture_output=True, timeout=300)
    [whl] = out.glob("scaling-*.whl")
    return whl


def test_the_wheel_holds_every_module_and_preset(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "scaling").rglob("*.py")}
    presets = {"scaling/presets/" + p.relative_to(REPO / "sweeps").as_posix()
               for p in (REPO / "sweeps").rglob("*") if p.suffix in (".yaml", ".json")}
    assert modules and presets and not (modules - names) and not (presets - names), (modules | presets) - names


def test_an_installed_wheel_finds_its_presets_from_anywhere(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "WANDB_MODE": "disabled",
           "SCALING_CACHE": str(tmp_path / "cache"), "HOME": str(tmp_path)}
    code = ("import sys, scaling, scaling.compose as c; from scaling.cli import app; "
            "print(scaling.__file__, c.preset_dir()); sys.argv = ['scaling'] + sys.argv[1:]; app()")
    out = subprocess.run([sys.executable, "-c", code, "sweep", "demo", "--dry-run", "--no-probe"], cwd=elsewhere,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    assert first.startswith(str(target)) and first.split()[1] == str(target / "scaling" / "presets")
    assert "sweep demo: 39 cells" in out.stdout
    dense = subprocess.run([sys.executable, "-c", code, "train", "model=tiny_dense", "--show-config"], cwd=elsewhere,
                           env=env, capture_output=True, text=True, timeout=300)
    assert dense.returncode == 0 and "n_experts: 1" in dense.stdout, dense.stderr
