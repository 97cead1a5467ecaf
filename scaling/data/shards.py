"""Token shard files and the folders that hold them (ARCHITECTURE section 6).

A shard is a flat binary of uint16 or uint32 token ids (as nanoGPT writes `train.bin`), or the same after the
1024-byte llm.c header (256 int32: magic 20240520 with version 1 for uint16 tokens, 20240801 with version 7 for
uint32; then the token count), as llm.c and modded-nanogpt write `fineweb_train_000001.bin`.

`data.path` is a folder or a glob of training shards:
- a folder with a `manifest.json` (written by `scaling data prepare`): its shards, token counts, vocabulary and
  fingerprint are read from the manifest (each file's size is checked against it; no file is hashed);
- any other folder: files with `train` in their name are the training split, with `val` the validation split
  (`train.bin`/`val.bin`, or `*_train_*.bin`/`*_val_*.bin`), in sorted order;
- a glob (`/data/fineweb/fineweb_train_*.bin`): its matches are the training split, and `data.val_path` (a glob
  or folder) the validation split, by default the same glob with `train` replaced by `val`.
"""

from __future__ import annotations

import glob
import hashlib
import json
from pathlib import Path

import numpy as np

from scaling.config import DataConfig
from scaling.data.tokens import DataError, DataSummary, Source, TokenData, TokenStream
from scaling.store import atomic_write_bytes, atomic_write_text

LLMC_HEADER_INTS = 256
LLMC_HEADER_BYTES = 4 * LLMC_HEADER_INTS
LLMC_MAGIC = {20240520: np.uint16, 20240801: np.uint32}
LLMC_VERSION = {np.dtype(np.uint16): 1, np.dtype(np.uint32): 7}
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "scaling-shards/1"
SHARD_SUFFIXES = (".bin",)


# ---- one file ------------------------------------------------------------------------------------------------
def shard_header(n_tokens: int, dtype) -> bytes:
    """The llm.c header of a shard of `n_tokens` tokens of `dtype` (uint16 or uint32)."""
    dtype = np.dtype(dtype)
    head = np.zeros(LLMC_HEADER_INTS, dtype=np.int32)
    head[0] = 20240520 if dtype == np.uint16 else 20240801
    head[1] = LLMC_VERSION[dtype]
    head[2] = n_tokens
    return head.tobytes()


def write_shard(path: Path, tokens: np.ndarray, header: bool = False) -> None:
    """Write tokens as a flat binary (nanoGPT) or with the llm.c header; atomically."""
    tokens = np.asarray(tokens)
    if tokens.dtype not in (np.uint16, np.uint32):
        raise ValueError(f"shard tokens must be uint16 or uint32, got {tokens.dtype}")
    body = tokens.tobytes()
    atomic_write_bytes(Path(path), (shard_header(tokens.size, tokens.dtype) if header else b"") + body)


def read_header(path: Path) -> tuple[np.dtype, int] | None:
    """(dtype, token count) from a shard's llm.c header, or None for a flat file."""
    if path.stat().st_size < LLMC_HEADER_BYTES:
        return None
    head = np.fromfile(path, dtype=np.int32, count=LLMC_HEADER_INTS)
    if int(head[0]) not in LLMC_MAGIC:
        return None
    return np.dtype(LLMC_MAGIC[int(head[0])]), int(head[2])


def read_shard(path: Path, token_dtype: str = "uint16") -> np.ndarray:
    """Memory-map a shard; an llm.c header, when present, sets the dtype and the token count."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"token shard {path} not found: check data.path (a folder or glob of token shards)")
    size = path.stat().st_size
    header = read_header(path)
    if header is not None:
        dtype, n = header
        if LLMC_HEADER_BYTES + n * dtype.itemsize != size:
            raise DataError(f"{path}: header says {n} tokens but the file size is {size} bytes (truncated?): "
                            f"prepare it again")
        return np.memmap(path, dtype=dtype, mode="r", offset=LLMC_HEADER_BYTES, shape=(n,))
    dtype = np.dtype(token_dtype)
    if size % dtype.itemsize or size == 0:
        raise DataError(f"{path}: {size} bytes is not a whole number of {token_dtype} tokens: set data.token_dtype")
    return np.memmap(path, dtype=dtype, mode="r")


def scan_tokens(tokens: np.ndarray) -> tuple[str, int]:
    """(SHA-256 of the tokens' bytes, largest token id), read in 16M-token chunks."""
    h, max_token = hashlib.sha256(), 0
    for i in range(0, len(tokens), 1 << 24):
        chunk = np.asarray(tokens[i : i + (1 << 24)])
        h.update(chunk.tobytes())
        max_token = max(max_token, int(chunk.max()))
    return h.hexdigest(), max_token


def _cached_scan(path: Path, tokens: np.ndarray, cache: Path) -> tuple[str, int]:
    """scan_tokens of a shard without a manifest, cached by (path, size, mtime)."""
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:16]
    side = cache / "shards" / f"{key}.json"
    if side.exists():
        meta = json.loads(side.read_text())
        return meta["sha256"], meta["max_token"]
    digest, max_token = scan_tokens(tokens)
    side.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(side, json.dumps({"path": str(path), "sha256": digest, "max_token": max_token}))
    return digest, max_token


def _looks_like_wider_tokens(tokens: np.ndarray) -> bool:
    """Whether uint16 tokens are really uint32 ones (little-endian: every second 16-bit value, the high half, is
    0 while the others are not). Judged on the first 2**20 values."""
    if tokens.dtype != np.uint16 or len(tokens) < 64:
        return False
    sample = np.asarray(tokens[: 1 << 20])
    return bool((sample[1::2] == 0).mean() > 0.99 and (sample[0::2] != 0).mean() > 0.5)


# ---- a folder or glob ----------------------------------------------------------------------------------------
def _is_glob(path: str) -> bool:
    return any(ch in path for ch in "*?[")


def split_files(cfg: DataConfig) -> dict[str, list[Path]]:
    """The shard files of each split ('train', 'val') named by data.path (and data.val_path), sorted."""
    path = str(cfg.path)
    if _is_glob(path):
        train = sorted(Path(p) for p in glob.glob(path) if Path(p).is_file())
        val_spec = cfg.val_path or _val_glob(path)
        val = sorted(Path(p) for p in glob.glob(val_spec)) if _is_glob(val_spec) else _named(Path(val_spec), "val")
        return {"train": train, "val": val}
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"data.path={folder} is not a folder: point it at a folder or glob of token shards "
                        f"(`scaling data prepare` writes one)")
    val = _named(Path(cfg.val_path), "val") if cfg.val_path else _named(folder, "val")
    return {"train": _named(folder, "train"), "val": val}


def _val_glob(train_glob: str) -> str:
    head, _, name = train_glob.rpartition("/")
    if "train" not in name:
        raise DataError(f"data.path={train_glob} names no validation shards: set data.val_path to their glob "
                        f"or folder")
    return (head + "/" if head else "") + name.replace("train", "val")


def _named(folder: Path, split: str) -> list[Path]:
    """Shards in `folder` whose name holds the split's word (a file path names itself)."""
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix in SHARD_SUFFIXES and split in p.name)


def read_manifest(folder: Path) -> dict | None:
    """A prepared folder's manifest, or None when it has none; a broken one is an error naming the fix."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
        if manifest.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"format {manifest.get('format')!r}, expected {MANIFEST_FORMAT!r}")
        for split in ("train", "val"):
            for shard in manifest["shards"][split]:
                shard["file"], shard["tokens"] = str(shard["file"]), int(shard["tokens"])
        int(manifest["vocab_size"]), str(manifest["fingerprint"])
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path} is not a readable shard manifest ({e}): prepare the folder again with "
                        f"`scaling data prepare`") from None
    return manifest


def manifest_summary(manifest: dict, source: str) -> DataSummary:
    return DataSummary(source=source, train_tokens=[sum(s["tokens"] for s in manifest["shards"]["train"])],
                       weights=[1.0], vocab_size=int(manifest["vocab_size"]),
                       fingerprint=f"shards:{manifest['fingerprint'][:16]}", where="manifest", vocab_is_tokenizer=True)


def load_shards(cfg: DataConfig, cache: Path, name: str = "") -> TokenData:
    """Memory-map the shards data.path names; checks sizes, dtype and token range (see the module docstring)."""
    if not cfg.path:
        raise DataError("data.source=shards needs data.path: a folder (`scaling data prepare` writes one) or a glob "
                        "of token shards; to plan without the data, dry-run with data.train_tokens=N")
    path = Path(str(cfg.path))
    manifest = None if _is_glob(str(cfg.path)) else read_manifest(path)
    if manifest is not None:
        return _load_manifest(path, manifest, cfg, name)
    files = split_files(cfg)
    streams, digests, vocab = {}, [], 0
    for split, paths in files.items():
        if not paths:
            raise DataError(f"no {split} shards in data.path={cfg.path}: name them *{split}*.bin (or set "
                            f"data.{'val_path' if split == 'val' else 'path'})")
        arrays = []
        for p in paths:
            tokens = read_shard(p, cfg.token_dtype)
            _check_width(p, tokens, cfg)
            digest, max_token = _cached_scan(p, tokens, cache)
            if max_token >= 1 << 24:
                raise DataError(f"{p} holds token ids up to {max_token:,}, more than any tokenizer has: uint16 "
                                f"tokens read as uint32? set data.token_dtype=uint16")
            digests.append(digest)
            vocab = max(vocab, max_token + 1)
            arrays.append(tokens)
        streams[split] = TokenStream(arrays)
    fingerprint = "shards:" + hashlib.sha256("".join(digests).encode()).hexdigest()[:16]
    return TokenData([Source(streams["train"], streams["val"], name=name or str(cfg.path))], fingerprint,
                     source=str(cfg.path), vocab_size=vocab)


def _check_width(path: Path, tokens: np.ndarray, cfg: DataConfig) -> None:
    if _looks_like_wider_tokens(tokens):
        raise DataError(f"{path} looks like uint32 tokens read as uint16 (every second 16-bit value is 0): set "
                        f"data.token_dtype=uint32")


def _load_manifest(folder: Path, manifest: dict, cfg: DataConfig, name: str) -> TokenData:
    dtype = np.dtype(manifest["dtype"])
    streams = {}
    for split in ("train", "val"):
        arrays = []
        for shard in manifest["shards"][split]:
            p = folder / shard["file"]
            tokens = read_shard(p, manifest["dtype"])
            if tokens.dtype != dtype or len(tokens) != shard["tokens"]:
                raise DataError(f"{p} holds {len(tokens):,} {tokens.dtype} tokens but {folder / MANIFEST} says "
                                f"{shard['tokens']:,} {dtype}: the folder changed after it was prepared; prepare "
                                f"it again")
            arrays.append(tokens)
        streams[split] = TokenStream(arrays)
    return TokenData([Source(streams["train"], streams["val"], name=name or str(folder))],
                     fingerprint=f"shards:{manifest['fingerprint'][:16]}", source=str(folder),
                     vocab_size=int(manifest["vocab_size"]),
                     notes={"manifest": str(folder / MANIFEST), "tokenizer": manifest.get("tokenizer", {}).get("name")})
