"""Shared fixtures: an isolated results directory and corpus cache per test session, W&B off."""

import pytest


@pytest.fixture(scope="session")
def corpus_cache(tmp_path_factory):
    """One cache for the embedded corpus per test session (built once, ~1 s)."""
    return tmp_path_factory.mktemp("corpus_cache")


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path, corpus_cache):
    monkeypatch.setenv("SCALING_CACHE", str(corpus_cache))
    monkeypatch.setenv("SCALING_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` skip cleanly where CUDA is absent."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
