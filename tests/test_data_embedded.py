"""The embedded corpus: the standard library's sources, sorted and filtered, as bytes or through a BPE."""

import numpy as np
import pytest

from scaling import data
from scaling.config import DataConfig
from scaling.data import embedded


def fake_stdlib(root):
    (root / "pkg").mkdir(parents=True)
    (root / "test").mkdir()
    (root / "site-packages").mkdir()
    (root / "b.py").write_text("print('b')\n")
    (root / "a.py").write_text("import os\n")
    (root / "pkg" / "c.py").write_text("x = 1\n")
    (root / "test" / "t.py").write_text("skip me\n")
    (root / "site-packages" / "s.py").write_text("skip me too\n")
    (root / "notes.txt").write_text("not python\n")
    return root


def test_stdlib_corpus_is_sorted_filtered_and_cached(tmp_path):
    root = fake_stdlib(tmp_path / "lib")
    files = embedded.stdlib_files(root)
    assert [f.relative_to(root).as_posix() for f in files] == ["a.py", "b.py", "pkg/c.py"]
    path, meta = embedded.build_stdlib_corpus(tmp_path / "cache", root)
    tokens = np.fromfile(path, dtype=np.uint16)
    assert bytes(tokens.astype(np.uint8)) == b"import os\nprint('b')\nx = 1\n"
    assert meta["n_tokens"] == tokens.size and meta["n_files"] == 3
    again_path, again = embedded.build_stdlib_corpus(tmp_path / "cache", root)
    assert again == meta and again_path == path
    (root / "a.py").write_text("import sys\n")  # a changed source is a new corpus with a new fingerprint
    _, changed = embedded.build_stdlib_corpus(tmp_path / "cache", root)
    assert changed["fingerprint"] != meta["fingerprint"]


def test_real_stdlib_corpus_split_and_fingerprint():
    d = data.load(DataConfig())
    assert d.vocab_size == 256
    assert len(d.train) > 5_000_000  # ~12.5 M bytes on CPython 3.11
    assert len(d.val) == pytest.approx(0.01 * (len(d.train) + len(d.val)), rel=0.01)
    assert d.fingerprint == data.load(DataConfig()).fingerprint
    assert d.fingerprint != data.load(DataConfig(val_fraction=0.02)).fingerprint


def test_the_bpe_corpus_is_built_once_from_the_sources_and_read_as_shards(tmp_path, monkeypatch):
    root = tmp_path / "lib"
    fake_stdlib(root)
    for i in range(60):  # enough documents for a held-out split
        (root / f"m{i:02d}.py").write_text(f"def f{i}(x):\n    return x * {i} + len('{'ab' * i}')\n")
    monkeypatch.setattr(embedded, "stdlib_root", lambda: root)
    cfg = DataConfig(tokenizer="bpe", bpe_vocab=300, val_fraction=0.1, cache_dir=str(tmp_path / "cache"))
    d = data.load(cfg)
    [folder] = (tmp_path / "cache").glob("stdlib-bpe300-*")
    assert d.vocab_size <= 300 and d.notes["tokenizer"] == "bpe-300" and len(d.train) > len(d.val) > 0
    stamp = (folder / "manifest.json").stat().st_mtime_ns
    assert data.load(cfg).fingerprint == d.fingerprint and (folder / "manifest.json").stat().st_mtime_ns == stamp
    assert data.describe(cfg).vocab_size == d.vocab_size
