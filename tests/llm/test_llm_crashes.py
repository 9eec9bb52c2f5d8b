"""Agents killed with SIGKILL at the worst moments, recovered by a new process.

The scripted model server runs in this test process, so it outlives the workers and counts
every request they send. Each scenario is compared with an uncrashed run of the same agent:
the same final answer, no completed model call sent again, tools run as their guarantees
allow (the refund exactly once), and token books that match what was spent and saved.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llm_agents
import pytest

import undying.llm
from undying import App
from undying.llm import TokenUsage
from undying.llm.testing import ScriptedServer

WORKER = Path(__file__).with_name("llm_crash_worker.py")


@dataclass
class Outcome:
    result: Any
    requests: dict[str, int]
    usage: TokenUsage
    effects: dict[str, int]
    refunds: list[tuple[str, int]]
    kills: int


@pytest.fixture
def research_server() -> Iterator[ScriptedServer]:
    server = ScriptedServer(llm_agents.research_script).start_in_thread()
    yield server
    server.stop_thread()


@pytest.fixture
def refund_server() -> Iterator[ScriptedServer]:
    server = ScriptedServer(llm_agents.REFUND_SCRIPT).start_in_thread()
    yield server
    server.stop_thread()


class Scenario:
    def __init__(self, tmp: Path, server: ScriptedServer, agent: str, crash: str = "") -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.db = tmp / "journal.db"
        self.effects = tmp / "effects.db"
        self.server = server
        self.agent = agent
        self.env = {
            **os.environ,
            "UNDYING_LLM_EFFECTS": str(self.effects),
            "UNDYING_LLM_CRASH": crash,
        }
        self.kills = 0

    def start(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(WORKER), str(self.db), self.server.url, self.agent],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env,
            cwd=WORKER.parent,
        )

    def finish(self, proc: subprocess.Popen[str], *, killed: bool = False) -> str:
        out, err = proc.communicate(timeout=90)
        detail = f"rc={proc.returncode}\n{out}\n{err}"
        if killed:
            assert proc.returncode == -signal.SIGKILL, detail
            self.kills += 1
        else:
            assert proc.returncode == 0, detail
        return out

    def outcome(self, out: str) -> Outcome:
        [line] = [ln for ln in out.splitlines() if ln.startswith("result ")]
        with sqlite3.connect(self.effects) as conn:
            effects = dict(conn.execute("SELECT tool, count(*) FROM effects GROUP BY tool"))
            refunds = conn.execute("SELECT key, cents FROM refunds").fetchall()
        conn.close()
        return Outcome(
            json.loads(line.split(" ", 1)[1]),
            dict(self.server.requests),
            asyncio.run(_usage(self.db, f"{self.agent}-1")),
            effects,
            refunds,
            self.kills,
        )


async def _usage(db: Path, run_id: str) -> TokenUsage:
    async with App(str(db), worker=False) as app:
        return await app.token_usage(run_id)


async def _approval_request(db: Path, run_id: str, proc: subprocess.Popen[str]) -> str:
    """Wait (with a deadline) until the run waits for approval, released; its call id."""
    async with App(str(db), worker=False) as app:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = await app.get_status(run_id)
                state = await app.handle(run_id).status()
            except undying.RunNotFound:
                status, state = None, ""
            if status and status.get("awaiting_approval") and state == "waiting":
                [call] = status["awaiting_approval"]
                return str(call["call_id"])
            await app.wait_for_change(0.1)
    raise AssertionError("the refund agent never asked for approval")


async def _approve(db: Path, run_id: str, call_id: str) -> None:
    async with App(str(db), worker=False) as app:
        assert await undying.llm.approve(app, run_id, call_id)


def _research(tmp: Path, server: ScriptedServer, crash: str = "") -> Outcome:
    scenario = Scenario(tmp, server, "research", crash)
    if crash:
        scenario.finish(scenario.start(), killed=True)
    return scenario.outcome(scenario.finish(scenario.start()))


def _refund(tmp: Path, server: ScriptedServer, crash: str = "") -> Outcome:
    scenario = Scenario(tmp, server, "refund", crash)
    proc = scenario.start()
    call_id = asyncio.run(_approval_request(scenario.db, "refund-1", proc))
    if crash == "waiting":  # killed while it waits for the human, then approved
        proc.send_signal(signal.SIGKILL)
        scenario.finish(proc, killed=True)
        asyncio.run(_approve(scenario.db, "refund-1", call_id))
        proc = scenario.start()
    else:
        asyncio.run(_approve(scenario.db, "refund-1", call_id))
        if crash:
            scenario.finish(proc, killed=True)
            proc = scenario.start()
    return scenario.outcome(scenario.finish(proc))


# -- research agent ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def research_reference(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    server = ScriptedServer(llm_agents.research_script).start_in_thread()
    try:
        return _research(tmp_path_factory.mktemp("reference"), server)
    finally:
        server.stop_thread()


def test_research_reference_run(research_reference: Outcome) -> None:
    ref = research_reference
    assert ref.result["summary"] == ref.result["streamed"] == llm_agents.SUMMARY
    assert ref.requests == {"chat.completions": 4}  # 3 tool-loop turns + the summary
    assert ref.effects == {"search": 2, "fetch": 1}
    assert ref.usage.spent.calls == 4 and ref.usage.saved.calls == 0


def test_killed_mid_stream_sends_only_that_call_again(
    tmp_path: Path, research_server: ScriptedServer, research_reference: Outcome
) -> None:
    # The stream stops after 4 deltas: it cannot end (and be journaled) before the worker,
    # 3 deltas in, kills itself; it goes on when the killed worker's connection drops.
    research_server.hold(after=4)
    got = _research(tmp_path / "run", research_server, crash="stream")
    ref = research_reference
    assert got.kills == 1 and got.result == ref.result
    assert got.requests == {"chat.completions": 5}  # the summary stream twice, nothing else
    assert got.effects == ref.effects  # no tool ran again
    # The killed stream spent what the provider had reported when it started (OpenAI: its
    # usage comes last, so nothing yet); everything else was spent once, as in the reference.
    assert got.usage.failed == undying.llm.Tokens(1, 0, 0, 0)
    assert got.usage.spent.total == ref.usage.spent.total
    assert got.usage.spent.calls == ref.usage.spent.calls + 1
    assert got.usage.saved.calls == 3  # the tool loop's turns, replayed by the recovery
    assert got.usage.saved.total == sum(
        m.spent.total for m in ref.usage.by_model
    ) - _last_call_tokens(research_server)


def test_killed_mid_stream_a_reader_elsewhere_sees_the_cut_tokens_a_marker_then_the_answer(
    tmp_path: Path, research_server: ScriptedServer
) -> None:
    """A chat front end in another process follows the summary token by token across the
    worker's death: the tokens the killed attempt had published, a marker saying to drop
    them, then the answer sent again, each exactly once, in order. The reader itself kills
    the worker (SIGKILL) once it has seen 3 tokens; the model holds the stream after 4."""
    research_server.hold(after=4)
    scenario = Scenario(tmp_path / "run", research_server, "research")
    scenario.env["UNDYING_LLM_PUBLISH"] = "answer"
    reader = StreamReader(scenario.db, "research-1", "answer")
    first = scenario.start()
    reader.kill_after(3, first)
    reader.start()
    scenario.finish(first, killed=True)
    got = scenario.outcome(scenario.finish(scenario.start()))
    seen = reader.join()
    assert got.result["summary"] == llm_agents.SUMMARY
    assert got.requests == {"chat.completions": 5}  # the summary twice, nothing else
    answer = [w if i == 0 else f" {w}" for i, w in enumerate(llm_agents.SUMMARY.split())]
    cut = seen[: seen.index(next(t for t in seen if isinstance(t, undying.StreamRetry)))]
    # What the killed attempt had committed (3 tokens, or 4 if the kill came late), then
    # the marker that voids exactly those, then the whole answer: nothing lost or repeated.
    assert 3 <= len(cut) <= 4 and cut == answer[: len(cut)]
    marker = undying.StreamRetry("openai.chat.completions.stream", 6, 1, len(cut))
    assert seen == [*cut, marker, *answer]


class StreamReader:
    """``app.read_stream`` in a thread of this process (its own event loop and client App):
    it waits for the run to exist, then reads the stream to its end."""

    def __init__(self, db: Path, run_id: str, stream: str) -> None:
        self.db, self.run_id, self.stream = db, run_id, stream
        self.seen: list[Any] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, daemon=True)
        self._kill: tuple[int, subprocess.Popen[str]] | None = None

    def kill_after(self, count: int, proc: subprocess.Popen[str]) -> None:
        """SIGKILL ``proc`` as soon as ``count`` values were read."""
        self._kill = (count, proc)

    def start(self) -> None:
        self.thread.start()

    def join(self) -> list[Any]:
        self.thread.join(90)
        assert not self.thread.is_alive(), f"the reader never saw the stream end: {self.seen}"
        if self.error is not None:
            raise self.error
        return self.seen

    def _main(self) -> None:
        try:
            asyncio.run(self._read())
        except BaseException as exc:
            self.error = exc

    async def _read(self) -> None:
        deadline = time.monotonic() + 90
        async with App(str(self.db), worker=False) as app:  # creates the file if need be
            while True:
                try:
                    async for value in app.read_stream(self.run_id, self.stream):
                        self.seen.append(value)
                        if self._kill is not None and len(self.seen) == self._kill[0]:
                            self._kill[1].send_signal(signal.SIGKILL)
                    return
                except undying.RunNotFound:
                    assert time.monotonic() < deadline, "the run was never started"
                    await app.wait_for_change(0.1)


def _last_call_tokens(server: ScriptedServer) -> int:
    usage = server.log[-1].usage
    assert usage is not None
    return usage[0] + usage[1]


def test_killed_between_two_tools_sends_no_model_call_again(
    tmp_path: Path, research_server: ScriptedServer, research_reference: Outcome
) -> None:
    got = _research(tmp_path / "run", research_server, crash="fetch")
    ref = research_reference
    assert got.kills == 1 and got.result == ref.result
    assert got.requests == ref.requests == {"chat.completions": 4}
    assert got.effects == {"search": 2, "fetch": 1}  # the searches were not run again
    assert got.usage.spent == ref.usage.spent
    assert got.usage.saved.calls == 2  # the two turns journaled before the kill


# -- refund agent -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def refund_reference(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    server = ScriptedServer(llm_agents.REFUND_SCRIPT).start_in_thread()
    try:
        return _refund(tmp_path_factory.mktemp("reference"), server)
    finally:
        server.stop_thread()


def test_refund_reference_run(refund_reference: Outcome) -> None:
    ref = refund_reference
    assert ref.result == llm_agents.ANSWER
    assert ref.requests == {"messages": 3}
    assert ref.effects == {"lookup": 1, "refund": 1}
    assert ref.refunds == [("refund-1:4", 1299)]  # model 0, lookup 1, model 2, approval 3
    # It was released while it waited for approval; resuming replayed the first two turns.
    assert ref.usage.spent.calls == 3 and ref.usage.saved.calls == 2


@pytest.mark.parametrize("crash", ["waiting", "after-refund", "in-refund"])
def test_refund_agent_killed_refunds_once(
    tmp_path: Path, refund_server: ScriptedServer, refund_reference: Outcome, crash: str
) -> None:
    got = _refund(tmp_path / "run", refund_server, crash=crash)
    ref = refund_reference
    assert got.kills == 1 and got.result == ref.result
    assert got.requests == ref.requests == {"messages": 3}
    assert got.effects == ref.effects  # one lookup, one refund
    assert got.refunds == ref.refunds
    assert got.usage.spent.calls == 3 and got.usage.failed.calls == 0
    if crash == "in-refund":
        # The refund's journal write was lost: reconcile found it in the ledger, and the
        # model was told so (a longer tool result: a few more input tokens, once).
        assert got.usage.spent.input_tokens > ref.usage.spent.input_tokens
        assert got.usage.saved.calls == 4
    else:
        assert got.usage.spent == ref.usage.spent
        assert got.usage.saved.calls == {"waiting": 2, "after-refund": 4}[crash]
