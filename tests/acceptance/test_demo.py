"""`undying demo` and the example agent, run as real processes (the demo SIGKILLs one)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "research_agent.py"


def test_demo_survives_sigkill_with_exactly_one_charge(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "undying", "demo", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "SIGKILL" in out
    assert "replayed from the journal" in out
    assert "executed in process 2" in out
    assert "run completed" in out
    assert "ledger holds exactly 1 charge" in out
    with closing(sqlite3.connect(tmp_path / "ledger.db")) as db:
        assert db.execute("SELECT count(*) FROM charges").fetchone() == (1,)


def test_demo_can_run_twice_in_one_directory(tmp_path: Path) -> None:
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, "-m", "undying", "demo", "--dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_example_runs_standalone_and_replays_a_finished_run(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "UNDYING_DATABASE_URL"}
    outputs = []
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, str(EXAMPLE), "example-run"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            env=env,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        outputs.append(proc.stdout)
    assert "charge_card" in outputs[0] and "completed in 4 turns" in outputs[0]
    # The second run finds the run complete in ./undying.db: no step runs again.
    assert "charge_card" not in outputs[1] and "completed in 4 turns" in outputs[1]
    assert (tmp_path / "undying.db").exists()
    with closing(sqlite3.connect(tmp_path / "ledger.db")) as db:
        assert db.execute("SELECT count(*) FROM charges").fetchone() == (1,)
