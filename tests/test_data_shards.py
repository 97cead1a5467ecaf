"""Token shard files: round trips, the llm.c format as llm.c writes it, folders and globs, manifests, refusals."""

import json
import struct

import numpy as np
import pytest

from scaling import data
from scaling.config import DataConfig
from scaling.data import shards
from scaling.data.tokens import DataError


def shard_cfg(path, tmp_path, **kw):
    return DataConfig(source="shards", path=str(path), cache_dir=str(tmp_path / "cache"), **kw)


@pytest.mark.parametrize("header", [False, True])
@pytest.mark.parametrize("dtype", [np.uint16, np.uint32])
def test_shards_round_trip(tmp_path, header, dtype):
    rng = np.random.default_rng(0)
    train, val = rng.integers(0, 1000, 5000).astype(dtype), rng.integers(0, 1000, 600).astype(dtype)
    shards.write_shard(tmp_path / "train.bin", train, header=header)
    shards.write_shard(tmp_path / "val.bin", val, header=header)
    cfg = shard_cfg(tmp_path, tmp_path, token_dtype=np.dtype(dtype).name)
    d = data.load(cfg)
    assert np.array_equal(d.train.window(0, 5000), train) and np.array_equal(d.val.window(0, 600), val)
    assert d.vocab_size == int(max(train.max(), val.max())) + 1
    assert d.fingerprint.startswith("shards:") and d.fingerprint == data.load(cfg).fingerprint


def llmc_write(path, tokens, uint32=False):
    """llm.c's dev/data/data_common.py layout, written here independently: 256 little-endian int32 (magic,
    version, token count, zeros), then the tokens."""
    magic, version = (20240801, 7) if uint32 else (20240520, 1)
    head = struct.pack("<3i", magic, version, len(tokens)) + b"\0" * (256 * 4 - 12)
    path.write_bytes(head + np.asarray(tokens, dtype="<u4" if uint32 else "<u2").tobytes())


@pytest.mark.parametrize("uint32", [False, True])
def test_llmc_shard_folders_and_globs_are_read_as_one_stream(tmp_path, uint32):
    rng = np.random.default_rng(1)
    parts = [rng.integers(0, 50257, n) for n in (3000, 2000, 1000)]
    for i, p in enumerate(parts):
        llmc_write(tmp_path / f"fineweb_train_{i + 1:06d}.bin", p, uint32)
    llmc_write(tmp_path / "fineweb_val_000000.bin", parts[0][:800], uint32)
    (tmp_path / "README.md").write_text("not a shard")
    whole = np.concatenate(parts)
    for path in (tmp_path, tmp_path / "fineweb_train_*.bin"):
        d = data.load(shard_cfg(path, tmp_path))
        assert len(d.train) == 6000 and np.array_equal(d.train.window(2990, 20), whole[2990:3010])
        assert np.array_equal(d.val.window(0, 800), parts[0][:800])
        assert d.vocab_size == int(max(p.max() for p in parts)) + 1
    with pytest.raises(DataError, match="names no validation shards: set data.val_path"):
        data.load(shard_cfg(tmp_path / "fineweb_*.bin", tmp_path))
    got = data.load(shard_cfg(tmp_path / "fineweb_*_00000[12].bin", tmp_path, val_path=str(tmp_path / "*val*")))
    assert len(got.train) == 5000


def test_missing_and_truncated_shards_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="not a folder"):
        data.load(shard_cfg(tmp_path / "nope", tmp_path))
    with pytest.raises(DataError, match="no train shards in data.path"):
        data.load(shard_cfg(tmp_path, tmp_path))
    with pytest.raises(DataError, match="needs data.path"):
        data.load(DataConfig(source="shards"))
    shards.write_shard(tmp_path / "train.bin", np.arange(1000, dtype=np.uint16), header=True)
    with open(tmp_path / "train.bin", "r+b") as f:
        f.truncate(1024 + 500)
    with pytest.raises(DataError, match="truncated"):
        shards.read_shard(tmp_path / "train.bin")


def test_headerless_shards_of_the_wrong_width_are_refused(tmp_path):
    """uint32 tokens read as uint16 look like valid ids (each one followed by a 0) and would train on garbage;
    uint16 tokens read as uint32 give ids no tokenizer has."""
    rng = np.random.default_rng(0)
    for name, n in (("train", 5000), ("val", 600)):
        shards.write_shard(tmp_path / f"{name}.bin", rng.integers(1, 50257, n).astype(np.uint32))
    with pytest.raises(DataError, match="uint32 tokens read as uint16.*data.token_dtype=uint32"):
        data.load(shard_cfg(tmp_path, tmp_path, token_dtype="uint16"))
    assert data.load(shard_cfg(tmp_path, tmp_path, token_dtype="uint32")).vocab_size <= 50257
    narrow = tmp_path / "narrow"
    narrow.mkdir()
    for name, n in (("train", 5000), ("val", 600)):
        shards.write_shard(narrow / f"{name}.bin", rng.integers(1, 50257, n).astype(np.uint16))
    with pytest.raises(DataError, match="uint16 tokens read as uint32"):
        data.load(shard_cfg(narrow, tmp_path, token_dtype="uint32"))


def write_manifest_folder(folder, train_parts, val_parts, vocab=1000):
    folder.mkdir(parents=True)
    listing = {}
    for split, parts in (("train", train_parts), ("val", val_parts)):
        listing[split] = []
        for i, p in enumerate(parts):
            name = f"{split}_{i:06d}.bin"
            shards.write_shard(folder / name, np.asarray(p, np.uint16), header=True)
            listing[split].append({"file": name, "tokens": len(p), "sha256": "x", "max_token": int(max(p))})
    manifest = {"format": shards.MANIFEST_FORMAT, "fingerprint": "ab" * 32, "vocab_size": vocab,
                "dtype": "uint16", "shards": listing, "tokenizer": {"name": "t"}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def test_a_manifest_gives_counts_vocab_and_fingerprint_and_its_files_are_checked(tmp_path):
    folder = tmp_path / "prepared"
    write_manifest_folder(folder, [np.arange(3000) % 500, np.arange(1000) % 500], [np.arange(500)])
    d = data.load(shard_cfg(folder, tmp_path))
    assert len(d.train) == 4000 and d.vocab_size == 1000 and d.fingerprint == "shards:" + "ab" * 8
    summary = data.describe(shard_cfg(folder, tmp_path))
    assert summary.where == "manifest" and summary.train_tokens == [4000] and summary.fingerprint == d.fingerprint
    shards.write_shard(folder / "train_000001.bin", np.arange(999, dtype=np.uint16), header=True)
    with pytest.raises(DataError, match="train_000001.bin holds 999 uint16 tokens but .*manifest.json says 1,000"):
        data.load(shard_cfg(folder, tmp_path))
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="not a readable shard manifest.*scaling data prepare"):
        data.load(shard_cfg(folder, tmp_path))
