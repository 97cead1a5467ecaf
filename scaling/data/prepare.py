"""`scaling data prepare`: documents -> tokens -> llm.c-headered shards and a manifest (ARCHITECTURE section 6).

One pass over the inputs (documents.py) in a fixed order. Each document goes to the validation split when a hash of
its text falls under `val_fraction` (so a held-out document, and any copy of it, is never trained on), is tokenized
(tokenizer.py; every core: worker processes, each encoding batches on one core), preceded by end-of-text, and
appended to its split's stream, which is cut into shards of exactly `shard_tokens` tokens (the last one shorter):
`train_000000.bin`, ..., `val_000000.bin`, uint16 when the vocabulary fits, uint32 otherwise.

Resume: after each shard, `prepare.state.json` records the shards written and where each split's stream stands
(document index, tokens of it already written). A rerun with the same inputs and settings skips finished shards
and tokenizes only what is not yet written; other settings in the same folder are refused. At the end
`manifest.json` holds the tokenizer (its file is copied beside the shards), vocabulary, token counts and SHA-256
per shard, and the corpus fingerprint that run records carry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scaling.data import documents as docs_mod
from scaling.data import shards
from scaling.data import tokenizer as tok_mod
from scaling.data.tokens import DataError
from scaling.store import atomic_write_bytes, atomic_write_text

STATE = "prepare.state.json"
TOKENIZER_FILE = "tokenizer.json"
SPLITS = ("train", "val")
CHUNK_CHARS = 1 << 20
"""Text per tokenization task (about 1 MB): large enough to amortise the hand-off, small enough to spread."""


@dataclass
class PrepareOptions:
    """What `scaling data prepare` takes (its flags, one to one)."""

    inputs: list[str]
    """Text, JSONL (.gz/.zst), Parquet files, folders of them, or saved Hugging Face datasets."""
    out: str
    """The folder to write: shards, tokenizer.json, manifest.json (and prepare.state.json while running)."""
    tokenizer: str | None = None
    """A tokenizer.json, a folder holding one, or a model name in the local Hugging Face cache."""
    train_bpe: int | None = None
    """Instead of `tokenizer`: train a byte-level BPE of this many tokens on the training documents."""
    bpe_sample_chars: int = 1 << 28
    """Characters of training documents (from the start) the BPE is trained on (256M)."""
    text_key: str = "text"
    """The field (JSONL) or column (Parquet, datasets) holding a document's text."""
    eot_token: str | None = None
    """The end-of-text token that precedes each document; None = the tokenizer's (tokenizer.END_OF_TEXT)."""
    shard_tokens: int = 100_000_000
    """Tokens per shard (llm.c writes 1e8); the last shard of a split is shorter."""
    val_fraction: float = 0.01
    """Fraction of documents held out for validation (by a hash of their text)."""
    workers: int | None = None
    """Tokenizer processes; None = every core of this machine."""
    show_progress: bool = True
    """A progress bar (input MB, MB/s) on stderr."""


def prepare(opts: PrepareOptions) -> dict:
    """Prepare (or finish preparing) `opts.out`; returns its manifest. DataError before any work on bad input."""
    _check_options(opts)
    out = Path(opts.out)
    inputs = docs_mod.find_inputs(opts.inputs, exclude=out)
    settings = _settings(opts, inputs)
    manifest = shards.read_manifest(out) if (out / shards.MANIFEST).is_file() else None
    if manifest is not None:
        if manifest.get("settings") != settings:
            raise DataError(f"{out} already holds a corpus prepared from other inputs or settings: pass a new --out "
                            f"(nothing there is overwritten)")
        return manifest
    state = _read_state(out, settings)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer_path = _tokenizer(opts, inputs, out, state)
    tokenizer = tok_mod.load(tokenizer_path)
    eot, eot_id = tok_mod.end_of_text_id(tokenizer, opts.eot_token)
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    dtype = np.uint16 if vocab <= 1 << 16 else np.uint32
    sha256 = tok_mod.file_sha256(tokenizer_path)
    if state.setdefault("tokenizer_sha256", sha256) != sha256:
        raise DataError(f"{tokenizer_path} changed since this folder was started: pass a new --out")
    _write_state(out, state)
    writers = {s: _ShardWriter(out, s, dtype, opts.shard_tokens, state) for s in SPLITS}
    counts = _tokenize_all(opts, inputs, tokenizer_path, eot_id, writers, out)
    for w in writers.values():
        w.finish()
    _write_state(out, state)
    _check_splits(opts, state, counts, out)
    manifest = _manifest(opts, settings, state, eot, eot_id, vocab, dtype, counts)
    atomic_write_text(out / shards.MANIFEST, json.dumps(manifest, indent=1))
    (out / STATE).unlink(missing_ok=True)
    return manifest


MIN_VAL_DOCUMENTS = 5
"""The documents a --val-fraction suggested for a small corpus is meant to hold out on average."""


def _check_splits(opts: PrepareOptions, state: dict, counts: dict, out: Path) -> None:
    """Refuse a corpus nothing can be trained or evaluated on, before its manifest says it is ready: no training
    tokens (empty inputs), or no held-out document (a few documents at a small --val-fraction)."""
    tokens = {s: sum(x["tokens"] for x in state["splits"][s]["shards"]) for s in SPLITS}
    if tokens["train"] == 0:
        raise DataError(f"the inputs hold no text to train on (0 tokens from {', '.join(map(str, opts.inputs))}): "
                        f"check the files, and --text-key for JSONL or Parquet")
    if opts.val_fraction > 0 and tokens["val"] == 0:
        n = sum(counts.values())
        suggest = min(0.49, max(MIN_VAL_DOCUMENTS / max(n, 1), 2 * opts.val_fraction))
        raise DataError(f"no document fell in the validation split ({n} documents at --val-fraction "
                        f"{opts.val_fraction:g} hold out {n * opts.val_fraction:.1f} on average), so training could "
                        f"not be evaluated: prepare again into a new --out (not {out}) with --val-fraction "
                        f"{suggest:.2g}, or give more documents")


def _check_options(opts: PrepareOptions) -> None:
    if (opts.tokenizer is None) == (opts.train_bpe is None):
        raise DataError("pass exactly one of --tokenizer (a tokenizer.json or cached name) and --train-bpe VOCAB")
    if opts.train_bpe is not None and not 260 <= opts.train_bpe <= 1 << 20:
        raise DataError(f"--train-bpe {opts.train_bpe}: a BPE vocabulary needs the 256 bytes, a few merges and "
                        f"<|endoftext|>: pick 260 or more (4096 to 65536 is usual)")
    if opts.shard_tokens < 1024:
        raise DataError(f"--shard-tokens {opts.shard_tokens} is too small: use at least 1024 (llm.c uses 1e8)")
    if not 0 <= opts.val_fraction < 0.5:
        raise DataError(f"--val-fraction {opts.val_fraction} must be in [0, 0.5)")
    if opts.workers is not None and opts.workers < 1:
        raise DataError(f"--workers {opts.workers} must be at least 1")


def _settings(opts: PrepareOptions, inputs: list[docs_mod.Input]) -> dict:
    """What determines the output: a rerun with other settings is a different corpus."""
    tokenizer = ({"train_bpe": opts.train_bpe, "sample_chars": opts.bpe_sample_chars} if opts.train_bpe
                 else {"sha256": tok_mod.file_sha256(tok_mod.find_tokenizer(opts.tokenizer))})
    return {"inputs": [{"path": str(i.path.resolve()), "kind": i.kind, "bytes": i.size} for i in inputs],
            "tokenizer": tokenizer, "eot_token": opts.eot_token, "text_key": opts.text_key,
            "shard_tokens": opts.shard_tokens, "val_fraction": opts.val_fraction}


def _read_state(out: Path, settings: dict) -> dict:
    path = out / STATE
    if not path.is_file():
        if out.is_dir() and any(p.suffix == ".bin" for p in out.iterdir()):
            raise DataError(f"{out} holds shards but no manifest or {STATE}: pass a new --out (nothing is "
                            f"overwritten)")
        return {"settings": settings, "splits": {s: {"shards": [], "next_doc": 0, "skip_tokens": 0}
                                                 for s in SPLITS}}
    try:
        state = json.loads(path.read_text())
    except ValueError as e:
        raise DataError(f"{path} is unreadable ({e}): delete the folder and prepare again") from None
    if state.get("settings") != settings:
        raise DataError(f"{out} holds an unfinished prepare of other inputs or settings: rerun it with the same "
                        f"ones, or pass a new --out")
    return state


def _write_state(out: Path, state: dict) -> None:
    atomic_write_text(out / STATE, json.dumps(state, indent=1))


def is_val(text: str, val_fraction: float) -> bool:
    """Whether a document is held out: its text's hash, as a number in [0, 1), is under val_fraction."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0**64 < val_fraction


def _tokenizer(opts: PrepareOptions, inputs, out: Path, state: dict) -> Path:
    """out/tokenizer.json: the given tokenizer copied, or a BPE trained on the training documents (once)."""
    path = out / TOKENIZER_FILE
    if state.get("tokenizer_sha256") and path.is_file():
        return path
    if opts.tokenizer is not None:
        tmp = out / (TOKENIZER_FILE + ".tmp")
        shutil.copyfile(tok_mod.find_tokenizer(opts.tokenizer), tmp)
        os.replace(tmp, path)
        return path

    def training_texts() -> Iterator[str]:
        left = opts.bpe_sample_chars
        for _, text in _all_documents(inputs, opts.text_key, lambda n: None):
            if left <= 0:
                return
            if text and not is_val(text, opts.val_fraction):
                left -= len(text)
                yield text

    if opts.show_progress:
        print(f"training a {opts.train_bpe}-token byte-level BPE on the training documents", file=sys.stderr)
    tok_mod.train_bpe(training_texts(), opts.train_bpe, path)
    return path


def _all_documents(inputs, text_key: str, counter) -> Iterator[tuple[int, str]]:
    index = 0
    for item in inputs:
        for text in docs_mod.documents(item, text_key, counter):
            yield index, text
            index += 1


@dataclass
class _ShardWriter:
    """One split's token stream, cut into shards of exactly `shard_tokens`; records its position after each."""

    out: Path
    split: str
    dtype: type
    shard_tokens: int
    state: dict
    buffer: deque = field(default_factory=deque)
    """(document index, offset of the first buffered token in that document, tokens)."""
    buffered: int = 0
    last_doc: int = -1
    """The last document added (its tokens are written or buffered)."""

    @property
    def own(self) -> dict:
        return self.state["splits"][self.split]

    def wants(self, doc: int) -> bool:
        """Whether document `doc` still has tokens to write (it is not before this split's resume point)."""
        return doc >= self.own["next_doc"]

    def add(self, doc: int, tokens: np.ndarray) -> None:
        offset = self.own["skip_tokens"] if doc == self.own["next_doc"] else 0
        if offset:
            tokens = tokens[offset:]
        if len(tokens):
            self.buffer.append((doc, offset, tokens))
            self.buffered += len(tokens)
        self.last_doc = doc
        while self.buffered >= self.shard_tokens:
            self._flush(self.shard_tokens)

    def finish(self) -> None:
        if self.buffered:
            self._flush(self.buffered)
        self.own["next_doc"], self.own["skip_tokens"] = max(self.own["next_doc"], self.last_doc + 1), 0

    def _flush(self, n: int) -> None:
        parts, need = [], n
        while need:
            doc, offset, tokens = self.buffer.popleft()
            take = min(need, len(tokens))
            parts.append(tokens[:take])
            if take < len(tokens):
                self.buffer.appendleft((doc, offset + take, tokens[take:]))
            need -= take
        self.buffered -= n
        body = np.concatenate(parts).astype(self.dtype)
        name = f"{self.split}_{len(self.own['shards']):06d}.bin"
        atomic_write_bytes(self.out / name, shards.shard_header(len(body), self.dtype) + body.tobytes())
        digest, max_token = shards.scan_tokens(body)
        self.own["shards"].append({"file": name, "tokens": int(len(body)), "sha256": digest,
                                   "max_token": max_token})
        if self.buffer:
            self.own["next_doc"], self.own["skip_tokens"] = int(self.buffer[0][0]), int(self.buffer[0][1])
        else:
            self.own["next_doc"], self.own["skip_tokens"] = self.last_doc + 1, 0
        _write_state(self.out, self.state)


# ---- tokenizing on every core ----------------------------------------------------------------------------------
_WORKER: dict = {}


def _init_worker(tokenizer_path: str, eot_id: int) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core per process; the processes are the parallelism
    _WORKER["tokenizer"], _WORKER["eot"] = tok_mod.load(Path(tokenizer_path)), eot_id


def encode_chunk(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of each text, end-of-text first, as one uint32 array and the lengths (cheap to pass back)."""
    encodings = _WORKER["tokenizer"].encode_batch(texts, add_special_tokens=False)
    eot = _WORKER["eot"]
    lengths = np.fromiter((len(e.ids) + 1 for e in encodings), dtype=np.int64, count=len(encodings))
    flat = np.empty(int(lengths.sum()), dtype=np.uint32)
    at = 0
    for e, n in zip(encodings, lengths, strict=True):
        flat[at] = eot
        flat[at + 1 : at + n] = e.ids
        at += n
    return flat, lengths


def _chunks(inputs, opts: PrepareOptions, writers: dict, counts: dict, counter) -> Iterator[list]:
    """Batches of (document index, split, text) still to tokenize; counts documents per split on the way."""
    batch, chars = [], 0
    for index, text in _all_documents(inputs, opts.text_key, counter):
        if not text:
            continue
        split = "val" if is_val(text, opts.val_fraction) else "train"
        counts[split] += 1
        if not writers[split].wants(index):
            continue
        batch.append((index, split, text))
        chars += len(text)
        if chars >= CHUNK_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def _tokenize_all(opts: PrepareOptions, inputs, tokenizer_path: Path, eot_id: int, writers: dict,
                  out: Path) -> dict:
    counts = {s: 0 for s in SPLITS}
    workers = opts.workers or os.cpu_count() or 1
    progress = _Progress(sum(i.size for i in inputs), opts.show_progress, out)
    pool = None
    try:
        if workers == 1:
            _init_worker(str(tokenizer_path), eot_id)
            submit = encode_chunk
        else:
            import multiprocessing

            pool = multiprocessing.get_context("spawn").Pool(workers, _init_worker, (str(tokenizer_path), eot_id))
        pending: deque = deque()
        for batch in _chunks(inputs, opts, writers, counts, progress.advance):
            texts = [t for _, _, t in batch]
            pending.append((batch, pool.apply_async(encode_chunk, (texts,)) if pool else submit(texts)))
            while len(pending) > (2 * workers if pool else 0):
                _write_batch(*pending.popleft(), writers)
        while pending:
            _write_batch(*pending.popleft(), writers)
    finally:
        if pool is not None:
            pool.terminate()
        progress.close()
    return counts


def _write_batch(batch: list, result, writers: dict) -> None:
    flat, lengths = result.get() if hasattr(result, "get") else result
    ends = np.cumsum(lengths)
    for (index, split, _), end, n in zip(batch, ends, lengths, strict=True):
        writers[split].add(index, flat[end - n : end])


class _Progress:
    """Input MB read and MB/s on stderr (rich), or nothing."""

    def __init__(self, total_bytes: int, show: bool, out: Path):
        self._bar = None
        if not show:
            return
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._bar = Progress(TextColumn(f"prepare {out.name}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                             TimeRemainingColumn(), transient=False)
        self._bar.start()
        self._task = self._bar.add_task("read", total=total_bytes)

    def advance(self, n: int) -> None:
        if self._bar is not None and n:
            self._bar.advance(self._task, n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _manifest(opts, settings, state, eot: str, eot_id: int, vocab: int, dtype,
              counts: dict) -> dict:
    split_shards = {s: state["splits"][s]["shards"] for s in SPLITS}
    h = hashlib.sha256(state["tokenizer_sha256"].encode())
    for s in SPLITS:
        for shard in split_shards[s]:
            h.update(f"{s}\0{shard['sha256']}\n".encode())
    name = opts.tokenizer if opts.tokenizer else f"bpe-{opts.train_bpe}"
    return {
        "format": shards.MANIFEST_FORMAT,
        "fingerprint": h.hexdigest(),
        "tokenizer": {"name": name, "file": TOKENIZER_FILE, "sha256": state["tokenizer_sha256"],
                      "eot_token": eot, "eot_id": eot_id},
        "vocab_size": vocab,
        "dtype": np.dtype(dtype).name,
        "documents": counts,
        "tokens": {s: sum(x["tokens"] for x in split_shards[s]) for s in SPLITS},
        "max_token": max((x["max_token"] for s in SPLITS for x in split_shards[s]), default=0),
        "shards": split_shards,
        "settings": settings,
    }
