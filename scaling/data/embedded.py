"""The embedded default corpus (ARCHITECTURE section 6): every `*.py` of this Python's standard library (outside
`test`, `tests` and `site-packages` folders), in sorted path order. Present wherever Python is; nothing downloaded.

- `data.tokenizer=bytes` (default): byte-level tokens (vocab 256), cached as a flat uint16 token file with a JSON
  sidecar holding its SHA-256 fingerprint; the last `data.val_fraction` is held out for validation.
- `data.tokenizer=bpe`: a byte-level BPE of `data.bpe_vocab` tokens trained on the corpus's training documents,
  and the corpus tokenized with it, built once by `scaling data prepare` (one document per file, held out by
  document) into the cache; later loads read the prepared folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import sysconfig
from pathlib import Path

import numpy as np

from scaling.config import DataConfig
from scaling.data.tokens import DataError, Source, TokenData, TokenStream
from scaling.store import atomic_write_bytes, atomic_write_text

SKIPPED_DIRS = {"test", "tests", "site-packages", "__pycache__"}


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: Path | None = None) -> list[Path]:
    """The standard library's `.py` files outside test folders, sorted by path."""
    root = Path(root or stdlib_root())
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS)
        files.extend(Path(dirpath) / f for f in filenames if f.endswith(".py"))
    return sorted(files)


def listing_key(files: list[Path], root: Path) -> str:
    """Cheap identity of the corpus sources (names, sizes, mtimes) to find the cache without reading 12 MB."""
    h = hashlib.sha256(sys.version.encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _sources(root: Path | None) -> tuple[Path, list[Path]]:
    root = Path(root or stdlib_root())
    files = stdlib_files(root)
    if not files:
        raise DataError(f"no .py files under {root}: the embedded corpus needs the Python standard library sources")
    return root, files


def build_stdlib_corpus(cache: Path, root: Path | None = None) -> tuple[Path, dict]:
    """Build (or find) the cached byte corpus: a flat uint16 token file and its metadata. Returns (path, meta)."""
    root, files = _sources(root)
    key = listing_key(files, root)
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


def load_stdlib_bytes(cfg: DataConfig, cache: Path) -> TokenData:
    path, meta = build_stdlib_corpus(cache)
    tokens = np.memmap(path, dtype=np.uint16, mode="r")
    n_val = max(1, int(round(len(tokens) * cfg.val_fraction)))
    # The fingerprint names the bytes and the split: a different val_fraction is different data.
    fingerprint = f"stdlib:{meta['fingerprint'][:16]}:val{cfg.val_fraction:g}"
    return TokenData([Source(TokenStream([tokens[:-n_val]]), TokenStream([tokens[-n_val:]]), name="stdlib")],
                     fingerprint=fingerprint, source="stdlib", vocab_size=256)


def bpe_folder(cfg: DataConfig, cache: Path, root: Path | None = None) -> Path:
    """The prepared folder of the BPE-tokenized embedded corpus, built on first use (about a minute)."""
    from scaling.data.prepare import PrepareOptions, prepare

    root, files = _sources(root)
    key = hashlib.sha256(f"{listing_key(files, root)}\0{cfg.bpe_vocab}\0{cfg.val_fraction}".encode()).hexdigest()
    folder = cache / f"stdlib-bpe{cfg.bpe_vocab}-{key[:16]}"
    if not (folder / "manifest.json").is_file():
        print(f"building the embedded corpus with a {cfg.bpe_vocab}-token BPE in {folder} (once)", file=sys.stderr)
        prepare(PrepareOptions(inputs=[str(f) for f in files], out=str(folder), train_bpe=cfg.bpe_vocab,
                               val_fraction=cfg.val_fraction, shard_tokens=1 << 24, show_progress=False))
    return folder
