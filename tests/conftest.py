"""Shared fixtures: an isolated results directory and corpus cache per test session, W&B off."""

import pytest

from scaling import cpu_blas

cpu_blas.enable()  # first, as in every entry point that trains: before torch loads


@pytest.fixture(scope="session")
def corpus_cache(tmp_path_factory):
    """One cache for the embedded corpus per test session (built once, ~1 s)."""
    return tmp_path_factory.mktemp("corpus_cache")


@pytest.fixture(autouse=True)
def torch_threads_restored():
    """A run with train.threads=N sets torch's threads for the whole process: give the next test the default back
    (a reference run on other threads sums in another order, and tiny differences grow over a run)."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path, corpus_cache):
    monkeypatch.setenv("SCALING_CACHE", str(corpus_cache))
    monkeypatch.setenv("SCALING_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def _slurm_up() -> bool:
    """Whether a Slurm controller answers here (bounded: a dead controller must not hang the tests)."""
    import shutil
    import subprocess

    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return False
    return out.returncode == 0 and any(s.startswith(("idle", "mixed", "alloc")) for s in out.stdout.split())


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` skip cleanly where CUDA is absent, and tests marked `slurm` where no cluster answers."""
    import torch

    if any("gpu" in item.keywords for item in items) and not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
    if any("slurm" in item.keywords for item in items) and not _slurm_up():
        skip = pytest.mark.skip(reason="needs a running Slurm cluster (make test-slurm starts one)")
        for item in items:
            if "slurm" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def user_sweeps(tmp_path):
    """A user's folder: ./sweeps/mine.yaml (no defaults list) with its own ./sweeps/model/wide.yaml; returns it."""
    (tmp_path / "sweeps" / "model").mkdir(parents=True)
    (tmp_path / "sweeps" / "mine.yaml").write_text("name: mine\nbase: [model=wide, train.batch_size=4]\n"
                                                   "budgets: [2e9]\nlr: {values: [1e-3, 2e-3]}\n")
    (tmp_path / "sweeps" / "model" / "wide.yaml").write_text("d_model: 32\nn_layers: 1\nn_heads: 2\nseq_len: 64\n"
                                                             "n_experts: 4\ntop_k: 1\nd_expert: 32\n")
    return tmp_path
