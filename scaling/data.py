"""Token data (ARCHITECTURE section 6): the embedded corpus, token-shard files, the train/validation split, batches.

- Embedded default: every `*.py` of this Python's standard library (outside `test`, `tests` and `site-packages`
  folders), in sorted path order, as bytes (vocab 256). Built once, cached as a flat uint16 token file with a JSON
  sidecar holding its SHA-256 fingerprint. The last `val_fraction` is held out for validation.
- Shards: a folder with `train.bin` and `val.bin`, flat uint16/uint32 tokens as nanoGPT writes them, or with the
  1024-byte llm.c header (magic 20240520: uint16 tokens; 20240801: uint32 tokens).

Batches are deterministic functions of (seed, step), so a resumed run sees exactly the batches it would have seen.
Numpy only: this module does not import torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scaling.cache import default_cache_dir
from scaling.config import DataConfig
from scaling.store import atomic_write_bytes, atomic_write_text

SKIPPED_DIRS = {"test", "tests", "site-packages", "__pycache__"}
LLMC_HEADER_INTS = 256
LLMC_MAGIC = {20240520: np.uint16, 20240801: np.uint32}


class DataError(ValueError):
    """Missing, corrupt or too-small data; the message names the file and the fix."""


@dataclass
class TokenData:
    """A train split and a validation split of token ids, with where they came from."""

    train: np.ndarray
    val: np.ndarray
    fingerprint: str
    """SHA-256 of the token content (train then val): records with different fingerprints are never mixed."""
    source: str
    vocab_size: int
    """Largest token id + 1 the data may contain (256 for bytes)."""

    def train_batch(self, step: int, batch_size: int, seq_len: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and next-token targets (B, T) of optimizer step `step`: random windows, a function of
        (seed, step) alone."""
        rng = np.random.default_rng([seed, step])
        starts = rng.integers(0, len(self.train) - seq_len - 1, size=batch_size, endpoint=True)
        windows = np.stack([self.train[s : s + seq_len + 1] for s in starts]).astype(np.int64)
        return windows[:, :-1], windows[:, 1:]

    def val_sequences(self, val_tokens: int, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
        """The fixed held-out set: contiguous, non-overlapping sequences from the start of the validation split."""
        n = min(val_tokens // seq_len, (len(self.val) - 1) // seq_len)
        if n < 1:
            raise DataError(
                f"validation split holds {len(self.val)} tokens, fewer than one sequence of {seq_len}: "
                f"use more data or a larger data.val_fraction"
            )
        flat = np.asarray(self.val[: n * seq_len + 1]).astype(np.int64)
        return flat[:-1].reshape(n, seq_len), flat[1:].reshape(n, seq_len)


def load(cfg: DataConfig) -> TokenData:
    if cfg.source == "stdlib":
        return load_stdlib(cfg)
    return load_shards(cfg)


# ---- embedded corpus ---------------------------------------------------------------------------------------
def cache_dir(cfg: DataConfig) -> Path:
    return Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()


def stdlib_files(root: Path | None = None) -> list[Path]:
    """The standard library's `.py` files outside test folders, sorted by path."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS)
        files.extend(Path(dirpath) / f for f in filenames if f.endswith(".py"))
    return sorted(files)


def _listing_key(files: list[Path], root: Path) -> str:
    """Cheap identity of the corpus sources (names, sizes, mtimes) to find the cache without reading 12 MB."""
    h = hashlib.sha256(sys.version.encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def build_stdlib_corpus(cache: Path, root: Path | None = None) -> tuple[Path, dict]:
    """Build (or find) the cached corpus: a flat uint16 token file and its metadata. Returns (path, meta)."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    files = stdlib_files(root)
    if not files:
        raise DataError(f"no .py files under {root}: the embedded corpus needs the Python standard library sources")
    key = _listing_key(files, root)
    bin_path, meta_path = cache / f"stdlib-{key}.bin", cache / f"stdlib-{key}.json"
    if bin_path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if bin_path.stat().st_size == 2 * meta["n_tokens"]:
            return bin_path, meta
    data = b"".join(f.read_bytes() for f in files)
    tokens = np.frombuffer(data, dtype=np.uint8).astype(np.uint16)
    meta = {
        "source": "stdlib",
        "root": str(root),
        "python": sys.version.split()[0],
        "n_files": len(files),
        "n_tokens": int(tokens.size),
        "fingerprint": hashlib.sha256(data).hexdigest(),
    }
    cache.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(bin_path, tokens.tobytes())
    atomic_write_text(meta_path, json.dumps(meta, indent=1))
    return bin_path, meta


def load_stdlib(cfg: DataConfig) -> TokenData:
    path, meta = build_stdlib_corpus(cache_dir(cfg))
    tokens = np.memmap(path, dtype=np.uint16, mode="r")
    n_val = max(1, int(round(len(tokens) * cfg.val_fraction)))
    # The fingerprint names the bytes and the split: a different val_fraction is different data.
    fingerprint = f"stdlib:{meta['fingerprint'][:16]}:val{cfg.val_fraction:g}"
    return TokenData(train=tokens[:-n_val], val=tokens[-n_val:], fingerprint=fingerprint, source="stdlib",
                     vocab_size=256)


# ---- token shards --------------------------------------------------------------------------------------------
def write_shard(path: Path, tokens: np.ndarray, header: bool = False) -> None:
    """Write tokens as a flat binary (nanoGPT) or with the llm.c header; atomically."""
    tokens = np.asarray(tokens)
    if tokens.dtype not in (np.uint16, np.uint32):
        raise ValueError(f"shard tokens must be uint16 or uint32, got {tokens.dtype}")
    body = tokens.tobytes()
    if header:
        head = np.zeros(LLMC_HEADER_INTS, dtype=np.int32)
        head[0] = 20240520 if tokens.dtype == np.uint16 else 20240801
        head[1] = 1 if tokens.dtype == np.uint16 else 7
        head[2] = tokens.size
        body = head.tobytes() + body
    atomic_write_bytes(Path(path), body)


def read_shard(path: Path, token_dtype: str = "uint16") -> np.ndarray:
    """Memory-map a shard; an llm.c header, when present, sets the dtype and the token count."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"token shard {path} not found: data.path must hold train.bin and val.bin")
    size = path.stat().st_size
    if size >= 4 * LLMC_HEADER_INTS:
        head = np.fromfile(path, dtype=np.int32, count=LLMC_HEADER_INTS)
        if int(head[0]) in LLMC_MAGIC:
            dtype = LLMC_MAGIC[int(head[0])]
            n = int(head[2])
            if 4 * LLMC_HEADER_INTS + n * np.dtype(dtype).itemsize != size:
                raise DataError(f"{path}: header says {n} tokens but the file size is {size} bytes (truncated?)")
            return np.memmap(path, dtype=dtype, mode="r", offset=4 * LLMC_HEADER_INTS, shape=(n,))
    dtype = np.dtype(token_dtype)
    if size % dtype.itemsize or size == 0:
        raise DataError(f"{path}: {size} bytes is not a whole number of {token_dtype} tokens: set data.token_dtype")
    return np.memmap(path, dtype=dtype, mode="r")


def _shard_fingerprint(path: Path, tokens: np.ndarray, cache: Path) -> tuple[str, int]:
    """SHA-256 of a shard's tokens and its largest token id, cached by (path, size, mtime)."""
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:16]
    side = cache / "shards" / f"{key}.json"
    if side.exists():
        meta = json.loads(side.read_text())
        return meta["sha256"], meta["max_token"]
    h, max_token = hashlib.sha256(), 0
    for i in range(0, len(tokens), 1 << 24):
        chunk = np.asarray(tokens[i : i + (1 << 24)])
        h.update(chunk.tobytes())
        max_token = max(max_token, int(chunk.max()))
    side.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(side, json.dumps({"path": str(path), "sha256": h.hexdigest(), "max_token": max_token}))
    return h.hexdigest(), max_token


def _looks_like_wider_tokens(tokens: np.ndarray) -> bool:
    """Whether uint16 tokens are really uint32 ones (little-endian: every second 16-bit value, the high half, is
    0 while the others are not). Judged on the first 2**20 values."""
    if tokens.dtype != np.uint16 or len(tokens) < 64:
        return False
    sample = np.asarray(tokens[: 1 << 20])
    return bool((sample[1::2] == 0).mean() > 0.99 and (sample[0::2] != 0).mean() > 0.5)


def load_shards(cfg: DataConfig) -> TokenData:
    folder = Path(cfg.path)
    if not folder.is_dir():
        raise DataError(f"data.path={folder} is not a folder: point it at a folder holding train.bin and val.bin")
    splits = {}
    digests, vocab = [], 0
    for name in ("train", "val"):
        path = folder / f"{name}.bin"
        splits[name] = read_shard(path, cfg.token_dtype)
        if _looks_like_wider_tokens(splits[name]):
            raise DataError(f"{path} looks like uint32 tokens read as uint16 (every second 16-bit value is 0): set "
                            f"data.token_dtype=uint32")
        digest, max_token = _shard_fingerprint(path, splits[name], cache_dir(cfg))
        if max_token >= 1 << 24:
            raise DataError(f"{path} holds token ids up to {max_token:,}, more than any tokenizer has: uint16 tokens "
                            f"read as uint32? set data.token_dtype=uint16")
        digests.append(digest)
        vocab = max(vocab, max_token + 1)
    fingerprint = "shards:" + hashlib.sha256("".join(digests).encode()).hexdigest()[:16]
    return TokenData(train=splits["train"], val=splits["val"], fingerprint=fingerprint, source=str(folder),
                     vocab_size=vocab)
