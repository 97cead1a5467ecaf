"""Documents from the inputs of `scaling data prepare`, in a fixed order, with the input bytes read so far.

An input is a file or a folder (its files, sorted, recursively):
- `.txt`, `.md`, `.py` and other text: the whole file is one document;
- `.jsonl` / `.json` (one object per line), optionally `.gz` or `.zst` compressed: one document per line, its
  text under `text_key`;
- `.parquet`: one document per row of the `text_key` column (read by row group);
- a Hugging Face dataset saved with `save_to_disk` (a folder with `state.json`): one document per row of
  `text_key`, read from its Arrow files (through `datasets.load_from_disk` when `datasets` is installed).
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from scaling.data.tokens import DataError

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
COMPRESSED_SUFFIXES = (".gz", ".zst", ".zstd")
SKIPPED_NAMES = ("manifest.json", "tokenizer.json", "prepare.state.json", "state.json", "dataset_info.json")


@dataclass
class Input:
    """One input file (or saved dataset) and how to read it."""

    path: Path
    kind: str
    """'text', 'jsonl', 'parquet' or 'hf'."""

    @property
    def size(self) -> int:
        if self.kind == "hf":
            return sum(f.stat().st_size for f in _hf_arrow_files(self.path))
        return self.path.stat().st_size


def _kind(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    while suffixes and suffixes[-1] in COMPRESSED_SUFFIXES:
        suffixes.pop()
    last = suffixes[-1] if suffixes else ""
    if last in JSONL_SUFFIXES:
        return "jsonl"
    if last == ".parquet":
        return "parquet"
    return "text"


def find_inputs(specs: list[str], exclude: Path | None = None) -> list[Input]:
    """The input files the command line names, in order (folders expanded, sorted); a missing one is an error.
    Files under `exclude` (the output folder, when it lies inside an input folder) are not inputs."""
    inputs: list[Input] = []
    skip = Path(exclude).expanduser().resolve() if exclude is not None else None
    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_dir() and (path / "state.json").is_file():
            inputs.append(Input(path, "hf"))
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.name not in SKIPPED_NAMES
                           and not p.name.startswith(".") and not (skip and p.resolve().is_relative_to(skip)))
            inputs.extend(Input(p, _kind(p)) for p in files)
        elif path.is_file():
            inputs.append(Input(path, _kind(path)))
        else:
            raise DataError(f"input {spec} not found: pass text, JSONL(.gz/.zst), Parquet files, folders of them, "
                            f"or a saved Hugging Face dataset")
    if not inputs:
        raise DataError(f"no input files in {', '.join(specs)}: pass text, JSONL or Parquet files")
    return inputs


class _CountingReader(io.RawIOBase):
    """A raw file that counts the bytes read from disk (for MB/s over compressed inputs)."""

    def __init__(self, f, counter: Callable[[int], None]):
        self._f, self._count = f, counter

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self._f.readinto(buffer)
        self._count(n or 0)
        return n

    def close(self) -> None:
        self._f.close()
        super().close()


def _open_bytes(path: Path, counter: Callable[[int], None]):
    """The input's bytes, decompressed (.gz, .zst)."""
    raw = _CountingReader(open(path, "rb"), counter)
    suffix = path.suffix.lower()
    if suffix == ".gz":
        return gzip.GzipFile(fileobj=io.BufferedReader(raw))
    if suffix in (".zst", ".zstd"):
        try:
            import zstandard
        except ImportError:
            raise DataError(f"{path} is zstd-compressed: pip install zstandard") from None
        return zstandard.ZstdDecompressor().stream_reader(io.BufferedReader(raw))
    return io.BufferedReader(raw)


def _open_text(path: Path, counter: Callable[[int], None]):
    return io.TextIOWrapper(_open_bytes(path, counter), encoding="utf-8", errors="replace")


def documents(item: Input, text_key: str, counter: Callable[[int], None]) -> Iterator[str]:
    """The documents of one input, in order; `counter(n)` is called with the input bytes consumed. A truncated or
    corrupt file (a cut .gz, a .gz that is not gzip, bad zstd) or a binary file read as text is a DataError naming
    it."""
    import zlib

    try:
        if item.kind == "text":
            with _open_bytes(item.path, counter) as f:
                yield _checked_text(item.path, f.read())
        elif item.kind == "jsonl":
            yield from _jsonl(item.path, text_key, counter)
        elif item.kind == "parquet":
            yield from _parquet(item.path, text_key, counter)
        else:
            yield from _hf_dataset(item.path, text_key, counter)
    except DataError:
        raise
    except (EOFError, OSError, zlib.error) as e:
        raise DataError(f"{item.path} is truncated or corrupt ({type(e).__name__}: {_first_line(e)}): re-create "
                        f"or re-download it, or leave it out") from None
    except Exception as e:
        if type(e).__module__.startswith("zstandard"):
            raise DataError(f"{item.path} is not valid zstd ({_first_line(e)}): re-create it, or leave it out"
                            ) from None
        raise


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


BINARY_ERRORS = 0.001
"""A text input with more bytes that are not UTF-8 than this fraction of its characters (or any NUL byte) is
binary."""


def _checked_text(path: Path, data: bytes) -> str:
    """A text input's bytes as text (bytes that are not UTF-8 become U+FFFD), refused when it is not text (a .bin of
    tokens, random bytes): undecodable bytes beyond BINARY_ERRORS, or NUL bytes."""
    import re

    text = data.decode("utf-8", errors="surrogateescape")
    bad, nul = len(re.findall("[\udc80-\udcff]", text)), text.count("\x00")
    if nul or bad > max(16, BINARY_ERRORS * len(text)):
        raise DataError(f"{path} is not UTF-8 text ({bad} undecodable bytes, {nul} NUL bytes in {len(text):,} "
                        f"characters): pass text, JSONL or Parquet files (token shards are not inputs: point "
                        f"data.path at a prepared folder instead)")
    return re.sub("[\udc80-\udcff]", "\ufffd", text) if bad else text


def _jsonl(path: Path, text_key: str, counter) -> Iterator[str]:
    with _open_text(path, counter) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{line_no} is not JSON ({e.msg}): fix or drop that line") from None
            text = row.get(text_key) if isinstance(row, dict) else None
            if not isinstance(text, str):
                raise DataError(f"{path}:{line_no} has no string field {text_key!r} (keys: "
                                f"{', '.join(list(row)[:8]) if isinstance(row, dict) else type(row).__name__}): "
                                f"set --text-key")
            yield text


def _column_texts(table, text_key: str, where: str) -> list[str]:
    if text_key not in table.column_names:
        raise DataError(f"{where} has no column {text_key!r} (columns: {', '.join(table.column_names[:8])}): set "
                        f"--text-key")
    return [t for t in table.column(text_key).to_pylist() if t]


def _parquet(path: Path, text_key: str, counter) -> Iterator[str]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:
        raise DataError(f"{path} is not a readable Parquet file ({e}): check the file") from None
    for i in range(pf.num_row_groups):
        table = pf.read_row_group(i, columns=[text_key] if text_key in pf.schema_arrow.names else None)
        counter(pf.metadata.row_group(i).total_byte_size)
        yield from _column_texts(table, text_key, str(path))


def _hf_arrow_files(folder: Path) -> list[Path]:
    try:
        state = json.loads((folder / "state.json").read_text())
        return [folder / f["filename"] for f in state["_data_files"]]
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{folder / 'state.json'} is not a saved Hugging Face dataset's state ({e}): pass the "
                        f"folder that save_to_disk wrote") from None


def _hf_dataset(folder: Path, text_key: str, counter) -> Iterator[str]:
    """A dataset saved with `save_to_disk`: `datasets.load_from_disk` when installed, else its Arrow stream
    files (the format save_to_disk writes) read with pyarrow."""
    try:
        import datasets
    except ImportError:
        datasets = None
    if datasets is not None:
        ds = datasets.load_from_disk(str(folder))
        if isinstance(ds, datasets.DatasetDict):
            raise DataError(f"{folder} holds splits ({', '.join(ds)}): pass one split's folder")
        for start in range(0, len(ds), 1000):
            batch = ds[start : start + 1000]
            if text_key not in batch:
                raise DataError(f"{folder} has no column {text_key!r} (columns: {', '.join(batch)}): set "
                                f"--text-key")
            yield from (t for t in batch[text_key] if t)
        return
    import pyarrow as pa

    for arrow in _hf_arrow_files(folder):
        with pa.memory_map(str(arrow)) as source:
            reader = pa.ipc.open_stream(source)
            for batch in reader:
                counter(batch.nbytes)
                yield from _column_texts(pa.Table.from_batches([batch]), text_key, str(arrow))
