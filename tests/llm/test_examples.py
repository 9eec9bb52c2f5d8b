"""The two LLM examples run offline (scripted model on loopback) and do what they say."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parents[2] / "examples"


def _run(tmp_path: Path, name: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "UNDYING_DATABASE_URL")}
    done = subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLES / name), *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_research_example_streams_then_answers_from_the_journal(tmp_path: Path) -> None:
    first = _run(tmp_path, "llm_research_agent.py", "r1")
    assert first.startswith("Durable agents journal every call")  # streamed live
    assert "3 tool turns" in first and "requests sent to the model: 4" in first
    again = _run(tmp_path, "llm_research_agent.py", "r1")
    assert "requests sent to the model: 0" in again


@pytest.mark.parametrize("deny", [False, True])
def test_refund_example_asks_a_human_and_refunds_at_most_once(
    tmp_path: Path, deny: bool
) -> None:
    out = _run(tmp_path, "llm_refund_agent.py", "x1", *(["--deny"] if deny else []))
    assert "approval asked: refund" in out
    if deny:
        assert "ledger: []" in out and "colleague" in out
    else:
        assert "ledger: [('x1:4', 1299)]" in out and "refunded 12.99" in out
