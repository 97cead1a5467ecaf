"""The embedded corpus, token shards and batches."""

import numpy as np
import pytest

from scaling import data
from scaling.config import DataConfig


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
    files = data.stdlib_files(root)
    assert [f.relative_to(root).as_posix() for f in files] == ["a.py", "b.py", "pkg/c.py"]
    path, meta = data.build_stdlib_corpus(tmp_path / "cache", root)
    tokens = np.fromfile(path, dtype=np.uint16)
    assert bytes(tokens.astype(np.uint8)) == b"import os\nprint('b')\nx = 1\n"
    assert meta["n_tokens"] == tokens.size and meta["n_files"] == 3
    again_path, again = data.build_stdlib_corpus(tmp_path / "cache", root)
    assert again == meta and again_path == path
    (root / "a.py").write_text("import sys\n")  # a changed source is a new corpus with a new fingerprint
    _, changed = data.build_stdlib_corpus(tmp_path / "cache", root)
    assert changed["fingerprint"] != meta["fingerprint"]


def test_real_stdlib_corpus_split_and_fingerprint():
    d = data.load(DataConfig())
    assert d.vocab_size == 256
    assert len(d.train) > 5_000_000  # ~12.5 M bytes on CPython 3.11
    assert len(d.val) == pytest.approx(0.01 * (len(d.train) + len(d.val)), rel=0.01)
    assert d.fingerprint == data.load(DataConfig()).fingerprint
    assert d.fingerprint != data.load(DataConfig(val_fraction=0.02)).fingerprint


def test_batches_are_a_function_of_seed_and_step(tmp_path):
    d = data.load(DataConfig())
    x1, y1 = d.train_batch(step=5, batch_size=4, seq_len=16, seed=0)
    x2, _ = d.train_batch(step=5, batch_size=4, seq_len=16, seed=0)
    x3, _ = d.train_batch(step=6, batch_size=4, seq_len=16, seed=0)
    assert x1.shape == (4, 16) and np.array_equal(x1, x2) and not np.array_equal(x1, x3)
    assert np.array_equal(x1[:, 1:], y1[:, :-1])  # targets are the next tokens
    xv, yv = d.val_sequences(val_tokens=1000, seq_len=100)
    assert xv.shape == (10, 100) and np.array_equal(xv.flatten()[1:], yv.flatten()[:-1])


@pytest.mark.parametrize("header", [False, True])
@pytest.mark.parametrize("dtype", [np.uint16, np.uint32])
def test_shards_round_trip(tmp_path, header, dtype):
    rng = np.random.default_rng(0)
    train, val = rng.integers(0, 1000, 5000).astype(dtype), rng.integers(0, 1000, 600).astype(dtype)
    data.write_shard(tmp_path / "train.bin", train, header=header)
    data.write_shard(tmp_path / "val.bin", val, header=header)
    cfg = DataConfig(source="shards", path=str(tmp_path), token_dtype=np.dtype(dtype).name,
                     cache_dir=str(tmp_path / "cache"))
    d = data.load(cfg)
    assert np.array_equal(d.train, train) and np.array_equal(d.val, val)
    assert d.vocab_size == int(max(train.max(), val.max())) + 1
    assert d.fingerprint.startswith("shards:") and d.fingerprint == data.load(cfg).fingerprint


def test_missing_and_truncated_shards_are_clear_errors(tmp_path):
    with pytest.raises(data.DataError, match="not a folder"):
        data.load(DataConfig(source="shards", path=str(tmp_path / "nope")))
    with pytest.raises(data.DataError, match="train.bin not found"):
        data.load(DataConfig(source="shards", path=str(tmp_path)))
    data.write_shard(tmp_path / "train.bin", np.arange(1000, dtype=np.uint16), header=True)
    with open(tmp_path / "train.bin", "r+b") as f:
        f.truncate(1024 + 500)
    with pytest.raises(data.DataError, match="truncated"):
        data.read_shard(tmp_path / "train.bin")


def test_headerless_shards_of_the_wrong_width_are_refused(tmp_path):
    """uint32 tokens read as uint16 look like valid ids (each one followed by a 0) and would train on garbage;
    uint16 tokens read as uint32 give ids no tokenizer has."""
    rng = np.random.default_rng(0)
    for name, n in (("train", 5000), ("val", 600)):
        data.write_shard(tmp_path / f"{name}.bin", rng.integers(1, 50257, n).astype(np.uint32))
    cfg = DataConfig(source="shards", path=str(tmp_path), token_dtype="uint16", cache_dir=str(tmp_path / "c"))
    with pytest.raises(data.DataError, match="uint32 tokens read as uint16.*data.token_dtype=uint32"):
        data.load(cfg)
    assert data.load(DataConfig(source="shards", path=str(tmp_path), token_dtype="uint32",
                                cache_dir=str(tmp_path / "c"))).vocab_size <= 50257
    narrow = tmp_path / "narrow"
    narrow.mkdir()
    for name, n in (("train", 5000), ("val", 600)):
        data.write_shard(narrow / f"{name}.bin", rng.integers(1, 50257, n).astype(np.uint16))
    with pytest.raises(data.DataError, match="uint16 tokens read as uint32"):
        data.load(DataConfig(source="shards", path=str(narrow), token_dtype="uint32", cache_dir=str(tmp_path / "c")))
