"""The progress line of logs: written and read back by the same module."""

from scaling import progress


def test_a_progress_line_reads_back_and_the_last_one_wins(tmp_path):
    log = tmp_path / "cell.log"
    lines = ["=== cell (abc) worker cpu0"] + [progress.line(s, 120, 3.2, 3.3, 2e-3, s * 2048, 5e4) for s in (10, 20)]
    log.write_text("\n".join(lines) + "\n")
    assert lines[-1].startswith("step 20/120 loss 3.2000")
    assert progress.last_step(log) == 20
    log.write_text("=== cell (abc) worker cpu0\n")
    assert progress.last_step(log) is None
    assert progress.last_step(tmp_path / "missing.log") is None
