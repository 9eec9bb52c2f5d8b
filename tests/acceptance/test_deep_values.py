"""Issue 15, item 1: a step result nested 200 levels deep must not take down every worker that
replays it. Real processes: the first journals the results and is SIGKILLed, the second recovers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

AGENT = Path(__file__).with_name("deep_agent.py")


def test_a_run_with_deeply_nested_results_recovers_after_a_crash(tmp_path: Path) -> None:
    db = str(tmp_path / "deep.db")
    first = subprocess.run(
        [sys.executable, str(AGENT), db], capture_output=True, text=True, timeout=120
    )
    assert first.returncode == -signal.SIGKILL, first.stderr
    second = subprocess.run(
        [sys.executable, str(AGENT), db], capture_output=True, text=True, timeout=120
    )
    assert second.returncode == 0, (second.returncode, second.stderr[-2000:])  # was -11, SIGSEGV
    (line,) = [line for line in second.stdout.splitlines() if line.startswith("result ")]
    assert json.loads(line.removeprefix("result ")) == {"turns": 200, "tuple levels": 200}
