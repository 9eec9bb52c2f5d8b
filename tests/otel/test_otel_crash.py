"""A traced worker dies by SIGKILL inside a step; another process recovers the run: the spans
both processes exported are one trace."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import undying.otel

WORKER = Path(__file__).with_name("otel_crash_worker.py")


def _worker(db: Path, spans: Path, mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(WORKER), str(db), str(spans), mode],
        capture_output=True,
        text=True,
        timeout=90,
    )


def _spans(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("mode", ["start-in-span", "start"])
def test_a_recovered_run_continues_its_trace(tmp_path: Path, mode: str) -> None:
    db = tmp_path / "journal.db"
    killed_spans, recovered_spans = tmp_path / "killed.jsonl", tmp_path / "recovered.jsonl"
    killed = _worker(db, killed_spans, mode)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert "crashing in step second" in killed.stdout
    recovered = _worker(db, recovered_spans, "recover")
    assert recovered.returncode == 0, recovered.stderr
    assert "result 50" in recovered.stdout

    before, after = _spans(killed_spans), _spans(recovered_spans)
    # What the killed process ended before it died: its step `first` (and the request span);
    # its execution span and the attempt of `second` it died in were still open.
    assert [s["name"].rsplit(":", 1)[-1] for s in before if s["name"].startswith("undying.")] == [
        "first"
    ]
    [run] = [s for s in after if s["name"] == "undying.run traced"]
    assert run["attributes"]["undying.run.replaying"] is True
    assert run["attributes"]["undying.run.epoch"] == 2  # taken over from the dead worker
    assert run["attributes"]["undying.run.replayed_steps"] == 1  # `first`, from the journal
    assert run["attributes"]["undying.run.status"] == "completed"
    [step] = [s for s in after if s["name"].startswith("undying.step ")]
    assert step["name"].endswith(":second")
    assert step["parent_id"] == run["span_id"]

    trace_ids = {s["trace_id"] for s in before + after}
    assert len(trace_ids) == 1, trace_ids
    assert {s["pid"] for s in before} != {s["pid"] for s in after}
    if mode == "start-in-span":
        [request] = [s for s in before if s["name"] == "request"]
        assert run["parent_id"] == request["span_id"]
    else:
        assert trace_ids == {undying.otel.derived_trace_id("traced-1")}
