"""A run waiting for approval survives SIGKILL of its process and completes after
send_event from a different process."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

AGENT = str(Path(__file__).with_name("approval_agent.py"))


def _spawn(db: str, log: str, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, AGENT, db, log, mode], stdout=subprocess.PIPE, text=True
    )


def test_waiting_run_survives_sigkill_and_completes_on_event_from_other_process(
    tmp_path: Path,
) -> None:
    db, log = str(tmp_path / "agent.db"), str(tmp_path / "effects.log")
    first = _spawn(db, log, "start")
    assert first.stdout is not None
    assert first.stdout.readline().strip() == "WAITING"
    first.send_signal(signal.SIGKILL)
    assert first.wait(30) == -signal.SIGKILL
    first.stdout.close()

    recovering = _spawn(db, log, "recover")
    assert recovering.stdout is not None
    assert recovering.stdout.readline().strip() == "WAITING"  # replayed up to the wait

    sender = subprocess.run([sys.executable, AGENT, db, log, "send"], timeout=60)
    assert sender.returncode == 0
    out, _ = recovering.communicate(timeout=60)
    assert recovering.returncode == 0
    assert out.strip() == "RESULT published with yes"
    # The step before the wait ran once, not again on recovery; the one after ran once.
    assert Path(log).read_text().splitlines() == ["draft", "publish:yes"]
