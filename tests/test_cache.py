"""The cache directory."""

from pathlib import Path

from scaling.cache import default_cache_dir


def test_the_cache_is_scaling_cache_else_under_home(monkeypatch, tmp_path):
    monkeypatch.setenv("SCALING_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("SCALING_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == Path(tmp_path) / ".cache" / "scaling"
