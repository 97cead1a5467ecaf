"""`scaling ARGS` run in the test's own process through Typer's runner: the same exit code, stdout and stderr as
a subprocess, without ~2 s of interpreter and import start per call. Tests that are about a fresh process (what
an import loads, signals, the acceptance run as a user types it) keep using subprocesses."""

from types import SimpleNamespace


def scaling(*args, env: dict | None = None) -> SimpleNamespace:
    """(returncode, stdout, stderr) of `scaling ARGS`; an exception other than an exit is raised, not hidden."""
    from typer.testing import CliRunner

    from scaling.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args], env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return SimpleNamespace(returncode=result.exit_code, stdout=result.stdout, stderr=result.stderr)
