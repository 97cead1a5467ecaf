"""Token data as training reads it: streams of token ids (one memory-mapped file or many seen as one), a train and
a validation stream per source, weighted sources (a mixture), and batches that are functions of (seed, step).

Numpy only: this module does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class DataError(ValueError):
    """Missing, corrupt or too-small data; the message names the file and the fix."""


class TokenStream:
    """Several 1-D token arrays (shards, usually memory-mapped) read as one stream in order. A window may cross
    a shard boundary: shards of one split are one corpus cut into files, documents separated by end-of-text."""

    def __init__(self, pieces: list[np.ndarray]):
        self.pieces = [p for p in pieces if len(p)]
        self.starts_P = np.cumsum([0] + [len(p) for p in self.pieces])

    def __len__(self) -> int:
        return int(self.starts_P[-1])

    def window(self, start: int, length: int) -> np.ndarray:
        """Tokens [start, start + length) as int64."""
        if len(self.pieces) == 1:
            return np.asarray(self.pieces[0][start : start + length]).astype(np.int64)
        out, end = [], start + length
        first = int(np.searchsorted(self.starts_P, start, side="right")) - 1
        for i in range(first, len(self.pieces)):
            lo, hi = int(self.starts_P[i]), int(self.starts_P[i + 1])
            if lo >= end:
                break
            out.append(np.asarray(self.pieces[i][max(start, lo) - lo : min(end, hi) - lo]))
        return np.concatenate(out).astype(np.int64)

    def random_windows(self, rng: np.random.Generator, n: int, length: int) -> np.ndarray:
        """`n` windows of `length` tokens at uniform random starts, (n, length) int64."""
        starts = rng.integers(0, len(self) - length, size=n, endpoint=True)
        return np.stack([self.window(int(s), length) for s in starts])


@dataclass
class Source:
    """One corpus: its training and validation streams and its share of the training tokens."""

    train: TokenStream
    val: TokenStream
    weight: float = 1.0
    name: str = ""


@dataclass
class DataSummary:
    """What planning needs to know about data, whether or not it is on this machine: tokens per source (None
    when unknown), their weights, the vocabulary and the fingerprint."""

    source: str
    train_tokens: list[int | None]
    weights: list[float]
    vocab_size: int | None
    fingerprint: str | None
    where: str = "on disk"
    """'on disk', 'manifest' (counted from a manifest, files not opened) or 'declared' (data.train_tokens)."""
    vocab_is_tokenizer: bool = False
    """vocab_size is the tokenizer's own (a manifest's, or 256 for bytes), not only the largest token id seen + 1."""

    @property
    def total_train_tokens(self) -> int | None:
        return None if None in self.train_tokens else sum(self.train_tokens)

    def epochs(self, tokens: int) -> float | None:
        """How many times a run of `tokens` training tokens reads its most-repeated source (None: unknown)."""
        if None in self.train_tokens:
            return None
        total_weight = sum(self.weights)
        return max(tokens * w / total_weight / n for w, n in zip(self.weights, self.train_tokens, strict=True))


@dataclass
class TokenData:
    """Token sources with where they came from; one source unless the config asks for a mixture."""

    sources: list[Source]
    fingerprint: str
    """SHA-256 based id of the token content (and split, and weights): records with different ones never mix."""
    source: str
    vocab_size: int
    """Largest token id + 1 the data may contain (256 for bytes)."""
    notes: dict = field(default_factory=dict)
    """Where the data came from, as the record keeps it (manifest fingerprint, tokenizer)."""

    @property
    def train(self) -> TokenStream:
        """The training stream of a single-source dataset."""
        if len(self.sources) != 1:
            raise ValueError("a mixture has one training stream per source: use .sources")
        return self.sources[0].train

    @property
    def val(self) -> TokenStream:
        if len(self.sources) != 1:
            raise ValueError("a mixture has one validation stream per source: use .sources")
        return self.sources[0].val

    def summary(self) -> DataSummary:
        return DataSummary(source=self.source, train_tokens=[len(s.train) for s in self.sources],
                           weights=[s.weight for s in self.sources], vocab_size=self.vocab_size,
                           fingerprint=self.fingerprint,
                           vocab_is_tokenizer=bool({"manifest", "tokenizer"} & set(self.notes))
                           or self.source == "stdlib")

    def train_batch(self, step: int, batch_size: int, seq_len: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and next-token targets (B, T) of optimizer step `step`: random windows (in a mixture, each row's
        source drawn by weight), a function of (seed, step) alone."""
        rng = np.random.default_rng([seed, step])
        if len(self.sources) == 1:
            windows_BT = self.sources[0].train.random_windows(rng, batch_size, seq_len + 1)
        else:
            weights = np.array([s.weight for s in self.sources], dtype=np.float64)
            which_B = rng.choice(len(self.sources), size=batch_size, p=weights / weights.sum())
            windows_BT = np.empty((batch_size, seq_len + 1), dtype=np.int64)
            for i, src in enumerate(self.sources):
                rows = np.flatnonzero(which_B == i)
                if len(rows):
                    windows_BT[rows] = src.train.random_windows(rng, len(rows), seq_len + 1)
        return windows_BT[:, :-1], windows_BT[:, 1:]

    def val_sequences(self, val_tokens: int, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
        """The fixed held-out set: contiguous, non-overlapping sequences from the start of each validation split
        (a mixture's sources contribute by weight)."""
        counts = _shares(val_tokens // seq_len, [s.weight for s in self.sources])
        xs, ys = [], []
        for src, n in zip(self.sources, counts, strict=True):
            n = min(n, (len(src.val) - 1) // seq_len)
            if n < 1:
                raise DataError(
                    f"validation split{' of ' + src.name if src.name else ''} holds {len(src.val)} tokens, fewer "
                    f"than one sequence of {seq_len}: use more data or a larger data.val_fraction"
                )
            flat = src.val.window(0, n * seq_len + 1)
            xs.append(flat[:-1].reshape(n, seq_len))
            ys.append(flat[1:].reshape(n, seq_len))
        return np.concatenate(xs), np.concatenate(ys)


def _shares(n: int, weights: list[float]) -> list[int]:
    """`n` split by weight into whole counts (largest remainders), each at least 1."""
    total = sum(weights)
    exact = [n * w / total for w in weights]
    counts = [max(1, int(e)) for e in exact]
    for i in sorted(range(len(weights)), key=lambda i: exact[i] - int(exact[i]), reverse=True):
        if sum(counts) >= n:
            break
        counts[i] += 1
    return counts
