"""Token data (ARCHITECTURE section 6): which source a config names, loaded for training or summarised for
planning. The parts:

- tokens.py: token streams, sources, batches as functions of (seed, step), DataError;
- embedded.py: the embedded standard-library corpus (bytes, or a BPE built on it);
- shards.py: token shard files (flat or llm.c-headered), folders and globs of them, the manifest;
- documents.py, tokenizer.py, prepare.py: `scaling data prepare`, from documents to a prepared folder.

A mixture (data.source=mixture) weights several prepared folders or globs: each training row's source is drawn by
weight from (seed, step), and the held-out set takes each source's first sequences by weight.
Numpy only: nothing here imports torch.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from scaling.cache import default_cache_dir
from scaling.config import DataConfig
from scaling.data.tokens import DataError, DataSummary, TokenData


def cache_dir(cfg: DataConfig) -> Path:
    return Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()


def load(cfg: DataConfig) -> TokenData:
    """The data a run trains on (memory-mapped); DataError names what is missing or wrong and the fix."""
    from scaling.data import embedded, shards

    if cfg.source == "stdlib":
        if cfg.tokenizer == "bpe":
            folder = embedded.bpe_folder(cfg, cache_dir(cfg))
            return shards.load_shards(_with_path(cfg, str(folder)), cache_dir(cfg), name="stdlib-bpe")
        return embedded.load_stdlib_bytes(cfg, cache_dir(cfg))
    if cfg.source == "shards":
        return shards.load_shards(cfg, cache_dir(cfg))
    return _load_mixture(cfg)


def _with_path(cfg: DataConfig, path: str, val_path: str | None = None) -> DataConfig:
    import dataclasses

    return dataclasses.replace(cfg, source="shards", path=path, val_path=val_path, mixture=[])


def _load_mixture(cfg: DataConfig) -> TokenData:
    from scaling.data import shards

    parts = [shards.load_shards(_with_path(cfg, m.path, m.val_path), cache_dir(cfg), name=m.path)
             for m in cfg.mixture]
    tokenizers = {p.notes.get("tokenizer") for p in parts if p.notes.get("tokenizer")}
    if len(tokenizers) > 1:
        raise DataError(f"data.mixture mixes tokenizers ({', '.join(sorted(tokenizers))}): prepare every folder "
                        f"with the same tokenizer")
    sources = []
    for part, m in zip(parts, cfg.mixture, strict=True):
        [src] = part.sources
        src.weight = m.weight
        sources.append(src)
    return TokenData(sources, fingerprint=_mixture_fingerprint([p.fingerprint for p in parts], cfg),
                     source="mixture", vocab_size=max(p.vocab_size for p in parts),
                     notes={"tokenizer": next(iter(tokenizers), None)})


def describe(cfg: DataConfig, required: bool = True) -> DataSummary:
    """What planning needs (tokens, vocabulary, fingerprint) without reading any token: from the manifest of a
    prepared folder, else from the files (loading them), else, when the data is not on this machine and
    `required` is False, from data.train_tokens (or unknown)."""
    from scaling.data import shards

    folders = [m.path for m in cfg.mixture] if cfg.source == "mixture" else [cfg.path]
    if cfg.source in ("shards", "mixture"):
        manifests = [shards.read_manifest(Path(p)) if p and Path(p).is_dir() else None for p in folders]
        if all(manifests):
            parts = [shards.manifest_summary(m, str(p)) for m, p in zip(manifests, folders, strict=True)]
            return _combined(cfg, parts)
    try:
        return load(cfg).summary()
    except DataError:
        if required:
            raise
        tokens = int(cfg.train_tokens) if cfg.train_tokens else None
        return DataSummary(source=cfg.source, train_tokens=[tokens] if tokens else [None], weights=[1.0],
                           vocab_size=None, fingerprint=None, where="declared" if tokens else "missing")


def _combined(cfg: DataConfig, parts: list[DataSummary]) -> DataSummary:
    if len(parts) == 1:
        return parts[0]
    return DataSummary(source="mixture", train_tokens=[p.train_tokens[0] for p in parts],
                       weights=[m.weight for m in cfg.mixture], vocab_size=max(p.vocab_size for p in parts),
                       fingerprint=_mixture_fingerprint([p.fingerprint for p in parts], cfg), where="manifest",
                       vocab_is_tokenizer=True)


def _mixture_fingerprint(fingerprints: list[str], cfg: DataConfig) -> str:
    """A mixture is its sources' content and their weights."""
    blob = "\0".join(f"{fp}:{m.weight:g}" for fp, m in zip(fingerprints, cfg.mixture, strict=True))
    return "mixture:" + hashlib.sha256(blob.encode()).hexdigest()[:16]


__all__ = ["DataError", "DataSummary", "TokenData", "cache_dir", "describe", "load"]
