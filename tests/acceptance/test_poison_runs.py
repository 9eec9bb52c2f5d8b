"""Runs that take workers down: real worker processes, real exits (issue 15, item 2).

Each test runs ``poison_worker.py`` (see its docstring). A step or workflow raising
``SystemExit`` or a ``CancelledError`` of its own must end as a recorded failure while the
process goes on to complete other runs; a step that kills its process every time must be
quarantined after a bounded number of worker deaths instead of cycling forever.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from undying import App

WORKER = Path(__file__).with_name("poison_worker.py")
#: the default of App(max_takeovers_without_progress=...)
LIMIT = 5


def _worker(db: Path, scenario: str) -> subprocess.CompletedProcess[str]:
    return _python(str(WORKER), str(db), scenario)


def _cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The ``undying`` command line, in a process of its own."""
    return _python("-m", "undying", "--db", str(db), *args)


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=60)


def _describe(proc: subprocess.CompletedProcess[str]) -> str:
    return f"rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"


def _outcomes(proc: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for line in proc.stdout.splitlines():
        if line.startswith("outcome "):
            _, run_id, data = line.split(" ", 2)
            found[run_id] = json.loads(data)
    return found


def _run_row(db: Path, run_id: str) -> tuple[str, int]:
    conn = sqlite3.connect(db)
    try:
        row = conn.execute("SELECT status, epoch FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return (str(row[0]), int(row[1]))
    finally:
        conn.close()


def _journal(db: Path, run_id: str) -> list[tuple[int, str, str]]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT seq, name, status FROM journal WHERE run_id = ? ORDER BY seq", (run_id,)
        ).fetchall()
        return [(int(seq), str(name), str(status)) for seq, name, status in rows]
    finally:
        conn.close()


def _error_lines(stderr: str, *words: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if "ERROR" in ln and all(w in ln for w in words)]


@pytest.mark.parametrize(
    ("scenario", "step"),
    [
        ("step-exit", "parse_flags"),
        ("thread-exit", "parse_flags_in_thread"),
        ("timeout-exit", "parse_flags_with_timeout"),
    ],
)
def test_a_step_raising_system_exit_fails_that_step_and_the_worker_completes_other_runs(
    tmp_path: Path, scenario: str, step: str
) -> None:
    db = tmp_path / "journal.db"
    proc = _worker(db, scenario)
    assert proc.returncode == 0, _describe(proc)
    outcomes = _outcomes(proc)
    assert outcomes.get("poison", {}).get("error") == "StepFailed", _describe(proc)
    assert outcomes["poison"]["error_type"] == "builtins.SystemExit"
    assert outcomes.get("after") == {"result": "TASK"}, _describe(proc)
    # Recorded once as the step's failure, not retried, never taken over.
    assert _run_row(db, "poison") == ("failed", 1)
    [(seq, name, status)] = _journal(db, "poison")
    assert (seq, status) == (0, "error") and name.endswith(step)
    assert _error_lines(proc.stderr, "'poison'", "SystemExit"), _describe(proc)


def test_a_workflow_raising_system_exit_ends_its_run_as_failed(tmp_path: Path) -> None:
    db = tmp_path / "journal.db"
    proc = _worker(db, "workflow-exit")
    assert proc.returncode == 0, _describe(proc)
    outcomes = _outcomes(proc)
    assert outcomes.get("poison", {}).get("error") == "WorkflowFailed", _describe(proc)
    assert outcomes["poison"]["error_type"] == "builtins.SystemExit"
    assert "the workflow gave up" in outcomes["poison"]["message"]
    assert outcomes.get("after") == {"result": "TASK"}, _describe(proc)
    assert _run_row(db, "poison") == ("failed", 1)
    assert len(_error_lines(proc.stderr, "'poison'", "SystemExit")) == 1, _describe(proc)


@pytest.mark.parametrize("scenario", ["step-cancel", "gather-cancel"])
def test_a_cancelled_error_raised_by_a_library_is_the_step_failure_not_a_takeover_loop(
    tmp_path: Path, scenario: str
) -> None:
    db = tmp_path / "journal.db"
    proc = _worker(db, scenario)
    assert proc.returncode == 0, _describe(proc)
    outcomes = _outcomes(proc)
    poison = outcomes.get("poison", {})
    assert poison.get("error") == "StepFailed", _describe(proc)
    assert (
        poison["error_type"] == "poison_worker.LibraryGaveUp"
    )  # a script's classes go by its module name
    assert "after 1 attempt(s)" in poison["message"]  # retries=3, but not retried
    assert outcomes.get("after") == {"result": "TASK"}, _describe(proc)
    # The lease is 2 s and the test took longer: a takeover loop would have raised the epoch.
    assert _run_row(db, "poison") == ("failed", 1)
    assert _error_lines(proc.stderr, "'poison'", "LibraryGaveUp"), _describe(proc)


def test_a_step_that_kills_its_process_every_time_is_quarantined(tmp_path: Path) -> None:
    db = tmp_path / "journal.db"
    deaths: list[subprocess.CompletedProcess[str]] = []
    # The first process journals `prepare`, so the first takeover sees progress; then each
    # worker dies without progress, LIMIT times are allowed, the next takeover quarantines.
    for _ in range(LIMIT + 4):
        proc = _worker(db, "hard-exit")
        if proc.returncode == 0:
            break
        assert proc.returncode == 1 and "dying in pid" in proc.stdout, _describe(proc)
        deaths.append(proc)
    else:
        pytest.fail(f"still {_run_row(db, 'poison')} after {len(deaths)} worker deaths")
    assert len(deaths) == LIMIT + 2
    outcomes = _outcomes(proc)
    poison = outcomes.get("poison", {})
    assert poison.get("error") == "RunQuarantined", _describe(proc)
    assert f"taken over {LIMIT + 1} times in a row without progress" in poison["message"]
    assert "journal position 1" in poison["message"]
    assert "undying resume poison" in poison["message"]
    assert outcomes.get("after") == {"result": "TASK"}, _describe(proc)
    assert _error_lines(proc.stderr, "'poison'", "quarantined"), _describe(proc)
    assert _run_row(db, "poison") == ("failed", LIMIT + 3)
    assert _journal(db, "poison")[0][2] == "ok"  # what was journaled is kept

    show = _cli(db, "show", "poison")
    assert show.returncode == 0, _describe(show)
    assert "status    failed" in show.stdout, show.stdout
    assert "RunQuarantined" in show.stdout and "without progress" in show.stdout, show.stdout

    # `undying resume` resets the count: the next worker executes the run again (and dies).
    resume = _cli(db, "resume", "poison")
    assert resume.returncode == 0, _describe(resume)
    again = _worker(db, "hard-exit")
    assert again.returncode == 1 and "dying in pid" in again.stdout, _describe(again)
    assert App(str(db), worker=False).max_takeovers_without_progress == LIMIT
