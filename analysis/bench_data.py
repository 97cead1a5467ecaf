"""Benchmark: tokenization throughput of `scaling data prepare` against `tokenizers`' own batch encoding, on one
core and on every core, side by side in one run.

Corpus: the embedded one's documents (this Python's standard library sources, ~12 MB, one document per file), so
the numbers are reproducible on any machine without a download. Tokenizer: a byte-level BPE of `--vocab` tokens
trained once on a sample of it (not timed).

- baseline: `Tokenizer.encode_batch` on every document held in memory (Rust threads on every core; one core with
  TOKENIZERS_PARALLELISM=false). Encoding only: no reading, splitting or writing.
- prepare: the whole of `scaling data prepare` (read the files, hash each document to its split, tokenize in
  `--workers` processes, write llm.c shards and the manifest), timed from start to manifest.

Each measurement runs in its own process (the tokenizer's thread pool is set once per process), `--rounds` times;
medians with min and max, in MB of input text per second.

    python analysis/bench_data.py             # the table
    python analysis/bench_data.py --json      # {"mb_per_s": {side: median}, ...}
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _documents() -> list[Path]:
    from scaling.data.embedded import stdlib_files

    return stdlib_files()


def child(side: str, tokenizer_path: str, workers: int) -> None:
    """Measure one side in this process; print one JSON line {"s": seconds, "mb": input MB}."""
    files = _documents()
    mb = sum(f.stat().st_size for f in files) / 1e6
    if side.startswith("baseline"):
        if side == "baseline_1core":
            os.environ["TOKENIZERS_PARALLELISM"] = "false"
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(tokenizer_path)
        texts = [f.read_text(encoding="utf-8", errors="replace") for f in files]
        t0 = time.perf_counter()
        tok.encode_batch(texts, add_special_tokens=False)
        seconds = time.perf_counter() - t0
    else:
        from scaling.data.prepare import PrepareOptions, prepare

        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            prepare(PrepareOptions(inputs=[str(f) for f in files], out=out, tokenizer=tokenizer_path,
                                   workers=workers, show_progress=False))
            seconds = time.perf_counter() - t0
    print(json.dumps({"s": seconds, "mb": mb}))


def _train_tokenizer(vocab: int, folder: Path) -> Path:
    from scaling.data.tokenizer import train_bpe

    path = folder / "tokenizer.json"
    texts = [f.read_text(encoding="utf-8", errors="replace") for f in _documents()[::4]]
    train_bpe(texts, vocab, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("SIDE", "TOKENIZER", "WORKERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    cores = os.cpu_count() or 1
    sides = {"baseline_1core": 1, "prepare_1worker": 1, "baseline_all_cores": cores, f"prepare_{cores}workers": cores}
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = _train_tokenizer(args.vocab, Path(tmp))
        rates: dict[str, list[float]] = {s: [] for s in sides}
        for _ in range(args.rounds):
            for side, workers in sides.items():
                out = subprocess.run([sys.executable, __file__, "--child", side, str(tokenizer), str(workers)],
                                     capture_output=True, text=True, check=True)
                m = json.loads(out.stdout.strip().splitlines()[-1])
                rates[side].append(m["mb"] / m["s"])
    medians = {s: statistics.median(r) for s, r in rates.items()}
    if args.json:
        print(json.dumps({"mb_per_s": medians, "rounds": args.rounds, "cores": cores, "vocab": args.vocab}))
        return
    print(f"tokenization of the embedded corpus ({m['mb']:.1f} MB, {len(_documents())} documents), byte-level BPE "
          f"{args.vocab}, {cores} cores, {args.rounds} rounds: MB/s median [min, max]")
    for side, r in rates.items():
        print(f"  {side:<22} {medians[side]:7.2f}  [{min(r):.2f}, {max(r):.2f}]")
    print(f"  prepare / baseline:  one core {medians['prepare_1worker'] / medians['baseline_1core']:.2f}x, "
          f"all cores {medians[f'prepare_{cores}workers'] / medians['baseline_all_cores']:.2f}x")


if __name__ == "__main__":
    main()
