"""Running the real ``undying`` entry point in a subprocess, and making files unwritable."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[2] / "src")


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()


def run_cli(
    *args: str, stdin: str | None = None, cwd: str | Path | None = None, timeout: float = 60
) -> CliResult:
    """``python -m undying ARGS`` as a user runs it (its own process, its own stdio)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, str(cwd or ".")])}
    env.pop("UNDYING_DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "undying", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


def assert_one_error_line(result: CliResult, *fragments: str) -> None:
    """A clear failure: non-zero exit, one line on stderr (no traceback) holding ``fragments``."""
    assert result.code != 0, result
    assert len(result.err_lines) == 1, result.err
    line = result.err_lines[0]
    assert line.startswith("error: "), line
    assert "Traceback" not in result.err
    for fragment in fragments:
        assert fragment in line, (fragment, line)


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[None]:
    """Make ``path`` unwritable even for root (``chattr +i``: tests run as root here, and
    root ignores ``chmod``); always made writable again, or pytest could not clean up."""
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"chattr +i is not available here: {made.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)
