"""Every command the docs show is run, so the docs cannot drift (README.md, docs/guide/, docs/methods/).

- A ```bash block's `scaling ...` lines (after `VAR=value` assignments, `\\` continuations joined, `# comments`
  dropped) run in a workspace that holds the sweeps they name (synthetic records, as `scaling sweep` writes them).
  What would train becomes its plan: `scaling sweep` and `scaling train` get `--dry-run` (and `--no-probe`),
  `scaling bench` one round without `--compile`; a fit takes 100 resamples and draws no figures (both are tested
  in tests/test_advise_pipeline.py and tests/test_fit_plots.py); everything else runs as written. Each must exit 0.
- A ```console block's `$ scaling ...` lines run exactly as written, and every line shown under one (but lines with
  `...`, an excerpt's gap) must be in what it printed (spaces and line breaks aside).
- A ```yaml block whose first line is `# file: PATH` is written to PATH in the workspace first.
- A ```python block's import lines are run: every name it uses from `scaling` exists.
- `make` lines are CI's own commands (.ci/run runs `make test`, and `make demo` is the README's first command); no
  other command may appear in a runnable block.
"""

from __future__ import annotations

import gzip
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from synthetic import synthetic_sweep, write_precision_sweep, write_sweep

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "docs" / "guide").glob("*.md")),
        *sorted((REPO / "docs" / "methods").glob("*.md"))]
"""The user's docs. docs/notes/ is the lab notebook: measurements, and the scripts they were taken with (some need
root and a Slurm cluster; tests/slurm/ runs the real ones)."""
FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass
class Command:
    doc: str
    line: int
    argv: list[str]
    env: dict[str, str]
    expected: list[str] | None = None
    """For a console block: the lines shown under the command."""

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


def blocks(path: Path) -> list[tuple[str, int, list[str]]]:
    """(language, first line number, lines) of every fenced block."""
    out, lang, start, lines = [], None, 0, []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        m = FENCE.match(line)
        if lang is None and m:
            lang, start, lines = m.group(1), i + 1, []
        elif lang is not None and line.startswith("```"):
            out.append((lang, start, lines))
            lang = None
        elif lang is not None:
            lines.append(line)
    return out


def _split(text: str) -> tuple[dict[str, str], list[str]]:
    words = shlex.split(text, comments=True)
    env = {}
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    return env, words


def commands(path: Path) -> tuple[list[Command], list[str]]:
    """The doc's runnable commands, and the lines of runnable blocks that are not `scaling` commands."""
    doc = str(path.relative_to(REPO))
    found, strangers = [], []
    for lang, start, lines in blocks(path):
        if lang == "bash":
            joined, first = "", start
            for k, line in enumerate(lines):
                if not joined:
                    first = start + k
                joined += line.rstrip("\\").rstrip() + " " if line.rstrip().endswith("\\") else line
                if line.rstrip().endswith("\\"):
                    continue
                env, words = _split(joined)
                joined = ""
                if not words:
                    continue
                if words[0] == "scaling":
                    found.append(Command(doc, first, words, env))
                elif words[0] != "make":
                    strangers.append(f"{doc}:{first}: {' '.join(words)}")
        elif lang == "console":
            for k, line in enumerate(lines):
                if line.startswith("$ "):
                    env, words = _split(line[2:])
                    shown = []
                    for later in lines[k + 1:]:
                        if later.startswith("$ "):
                            break
                        shown.append(later)
                    found.append(Command(doc, start + k, words, env, expected=shown))
    return found, strangers


ALL = [c for doc in DOCS for c in commands(doc)[0]]


def test_runnable_blocks_hold_only_commands_a_test_runs():
    strangers = [s for doc in DOCS for s in commands(doc)[1]]
    assert not strangers, strangers
    assert len(ALL) >= 40  # the docs show the tool: a parser that finds nothing would pass the rest


def test_python_blocks_import_what_exists():
    for doc in DOCS:
        for lang, start, lines in blocks(doc):
            if lang != "python":
                continue
            imports = "\n".join(line for line in lines if re.match(r"\s*(from scaling\S* import|import scaling)",
                                                                     line))
            exec(compile(imports, f"{doc}:{start}", "exec"), {})


def _runnable(argv: list[str]) -> list[str]:
    """What would train becomes its plan (see the module docstring)."""
    argv = [a for a in argv if a != "--wait"]
    command = argv[1] if len(argv) > 1 else ""
    planning = {"--dry-run", "--show-config"} & set(argv)
    if command in ("sweep", "train") and not planning:
        argv.append("--dry-run")
    if command == "sweep" and "--show-config" not in argv and "--no-probe" not in argv:
        argv.append("--no-probe")
    if command == "bench":
        argv = [a for a in argv if a != "--compile"] + ["--rounds", "1"]
    if command == "fit" and "--bootstrap" not in argv:
        argv += ["--bootstrap", "100", "--no-plots"]
    return argv


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A folder with what the docs' commands read: the sweeps they name (synthetic records and a fit), the files
    the docs show as `# file:` blocks, a small corpus, a CSV of runs, the reference data, a fit with an
    allocation law for the wind tunnel."""
    from scaling import store
    from scaling.advise.pipeline import FitOptions, fit_sweep
    from scaling.sweep.plan import compose_sweep, plan_sweep

    ws = tmp_path_factory.mktemp("docs")
    results = ws / "results"
    lrs = (1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2)
    write_sweep(results, "demo", budgets=(1e11, 3e11, 1e12), lrs=lrs, noise=0.02)
    fit = fit_sweep(results, FitOptions(sweep="demo", target_flops=3e12, bootstrap=100, plots=False))
    predicted = fit.report.laws["lr_opt"].value(C=3e12)
    write_sweep(results, "demo-verify", budgets=(3e12,), lrs=tuple(predicted * f for f in (0.5, 1, 2)),
                laws=str(fit.written["fit"]), seed=1)
    write_precision_sweep(results, "precision_cpu")
    lr_batch = plan_sweep(compose_sweep("lr_batch", ["data.train_tokens=1e10"]), data_required=False)
    store.write_plan(results, "lr_batch", lr_batch.to_json())
    (results / "isoflop" / "fit").mkdir(parents=True)
    (results / "isoflop" / "fit" / "fit.json").write_text((REPO / "sweeps" / "published" / "ling_moe.json").read_text())
    for doc in DOCS:
        for lang, _, lines in blocks(doc):
            if lang == "yaml" and lines and lines[0].startswith("# file: "):
                target = ws / lines[0].removeprefix("# file: ").strip()
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text("\n".join(lines[1:]) + "\n")
    corpus = ws / "corpus"
    corpus.mkdir()
    sources = sorted(Path(json.__file__).parent.parent.glob("*.py"))[:60]
    for k in range(4):  # documents of about 3,000 characters: enough of them that 1% are held out
        with gzip.open(corpus / f"part{k}.jsonl.gz", "wt") as f:
            for src in sources[k::4]:
                text = src.read_text(errors="replace")
                for i in range(0, len(text), 3000):
                    f.write(json.dumps({"text": text[i: i + 3000]}) + "\n")
    df = synthetic_sweep(0).df.rename(columns={"params": "Model Size", "flops": "Training FLOP"})
    df[["Model Size", "Training FLOP", "tokens", "loss", "lr"]].to_csv(ws / "runs.csv", index=False)
    (ws / "analysis").mkdir()
    (ws / "analysis" / "reference").symlink_to(REPO / "analysis" / "reference")
    return ws


@pytest.mark.parametrize("command", ALL, ids=[c.id for c in ALL])
def test_the_docs_command_runs(command, workspace, monkeypatch):
    from tests.inprocess import scaling

    monkeypatch.chdir(workspace)
    monkeypatch.delenv("SCALING_RESULTS")  # ./results, as a user's folder
    env = {"COLUMNS": "100", **{k: v.replace("$PWD", str(workspace)) for k, v in command.env.items()}}
    argv = command.argv if command.expected is not None else _runnable(command.argv)
    out = scaling(*argv[1:], env=env)
    printed = " ".join((out.stdout + out.stderr).split())
    if command.expected is None:
        assert out.returncode == 0, f"{command.id}: {' '.join(argv)}\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
        return
    for line in command.expected:
        if line.strip() and "..." not in line:
            assert " ".join(line.split()) in printed, f"{command.id}: {line!r} not in what it printed:\n{printed}"


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_link_between_the_docs_leads_somewhere():
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            file = (doc.parent / path).resolve() if path else doc
            assert file.exists(), f"{doc.relative_to(REPO)}: link to {target}: no such file"
            if anchor and file.suffix == ".md":
                headings = [_anchor(h) for h in re.findall(r"^#+ (.+)$", file.read_text(), re.M)]
                assert anchor in headings, f"{doc.relative_to(REPO)}: link to {target}: no such heading"
