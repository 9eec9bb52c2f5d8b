"""The example research agent, and ``undying demo``, which kills it in the middle of a payment.

The first half of this file is an ordinary undying app, the one ``examples/research_agent.py``
runs: a research agent whose model is a script (no network, no API key) and whose tools are a
canned web search and a card charge written to a toy payment provider's ledger (``ledger.db``,
one row per idempotency key).

The second half is the demo. It starts the agent in a child process, follows the lines the
steps print, and SIGKILLs the child right after the card was charged, while the charge's
result has not reached the journal yet. A second child opens the same database, which
recovers the run at once: the journaled calls are replayed, the charge runs again under the
same idempotency key (the ledger ignores the repeat), and the agent finishes. The demo then
shows, entry by entry, what was replayed and what was executed again, and checks the ledger.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import undying
from undying import App, Context

# --------------------------------------------------------------------------------------------
# The agent
# --------------------------------------------------------------------------------------------

app = App()  # $UNDYING_DATABASE_URL, else the SQLite file ./undying.db
LEDGER = "ledger.db"  # the payment provider's books (a real provider keeps these for you)
TASK = "How do AI agents survive crashes? Buy the survey paper if it is paywalled."
SEARCH_INDEX = {
    "durable execution for AI agents": [
        "Journaling side effects: replay instead of restart",
        "Why agents lose hours of work to one OOM kill",
        "Idempotency keys in payment APIs",
    ],
    "survey of durable execution": ["Durable Execution: a Survey (paywalled, $12.00)"],
}


def say(text: str) -> None:
    """Tell the console what the running step does (``undying demo`` follows these lines)."""
    step = undying.current_step()
    where = f"[{step.seq}] {step.name.rpartition(':')[2]}" if step else ""
    print(f"  {where:<16} {text}", flush=True)


@undying.step(retries=3, timeout=60)
async def call_model(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The LLM. Scripted: it picks its next move from the tool results it has seen so far."""
    await asyncio.sleep(0.05)  # a real model call takes a while
    seen = [m for m in messages if m["role"] == "tool"]
    reply: dict[str, Any]
    if len(seen) < len(SEARCH_INDEX):
        reply = {"tool": "web_search", "args": {"query": list(SEARCH_INDEX)[len(seen)]}}
    elif len(seen) == len(SEARCH_INDEX):
        reply = {"tool": "charge_card", "args": {"order": "survey-2207", "cents": 1200}}
    else:
        hits = sum(len(m["content"]) for m in seen if m["name"] == "web_search")
        receipt = seen[-1]["content"]
        reply = {
            "content": f"Read {hits} sources, bought the survey ({receipt}): agents survive"
            " crashes by journaling every effect and replaying it."
        }
    if "tool" in reply:
        args = ", ".join(f"{k}={v!r}" for k, v in reply["args"].items())
        say(f"-> {reply['tool']}({args})")
    else:
        say("-> final answer")
    return {"role": "assistant", **reply}


@undying.step(retries=3, timeout=30)
async def web_search(query: str) -> list[str]:
    await asyncio.sleep(0.02)
    hits = SEARCH_INDEX.get(query, [])
    say(f"{query!r}: {len(hits)} hit{'s' if len(hits) != 1 else ''}")
    return hits


@undying.step(retries=2)
async def charge_card(order: str, cents: int) -> str:
    """Charge once per idempotency key: a retry or a re-run after a crash finds the first
    charge and gets its receipt back, as with any payment API that honours keys."""
    key = undying.idempotency_key()  # "<run_id>:<seq>": the same on every retry and replay
    with closing(sqlite3.connect(LEDGER, isolation_level=None)) as db:  # autocommit
        db.execute(
            "CREATE TABLE IF NOT EXISTS charges"
            " (idempotency_key TEXT UNIQUE, order_id TEXT, cents INTEGER, receipt TEXT)"
        )
        new = db.execute(
            "INSERT OR IGNORE INTO charges VALUES (?, ?, ?, ?)",
            (key, order, cents, f"rcpt-{secrets.token_hex(4)}"),
        ).rowcount
        (receipt,) = db.execute(
            "SELECT receipt FROM charges WHERE idempotency_key = ?", (key,)
        ).fetchone()
    if new:
        say(f"charged ${cents / 100:.2f} for {order}, key {key}")
    else:
        say(f"key {key} was charged already: not charged again")
    await asyncio.sleep(0.5)  # the provider's reply is on its way (the demo kills us here)
    return str(receipt)


TOOLS: dict[str, Callable[..., Awaitable[Any]]] = {
    "web_search": web_search,
    "charge_card": charge_card,
}


@app.workflow()
async def research_agent(ctx: Context, task: str, max_turns: int = 8) -> dict[str, Any]:
    started = ctx.now()  # journaled: a replay sees the same start time
    messages: list[dict[str, Any]] = [{"role": "user", "content": task}]
    for turn in range(1, max_turns + 1):
        ctx.set_status({"turn": turn, "phase": "thinking"})
        reply = await call_model(messages)
        messages.append(reply)
        if "tool" not in reply:
            break
        ctx.set_status({"turn": turn, "phase": reply["tool"]})
        result = await TOOLS[reply["tool"]](**reply["args"])
        messages.append({"role": "tool", "name": reply["tool"], "content": result})
    else:
        raise RuntimeError(f"no answer after {max_turns} turns")
    seconds = (ctx.now() - started).total_seconds()
    return {"answer": reply["content"], "turns": turn, "seconds": round(seconds, 2)}


# --------------------------------------------------------------------------------------------
# The demo: `undying demo [--dir DIR]`
# --------------------------------------------------------------------------------------------

_STEP_LINE = re.compile(r"^\s*\[(\d+)\] (\w+)")
_WATCHDOG_SECONDS = 60.0
_RECORDED = {"now": "ctx.now()", "random": "ctx.random()", "uuid": "ctx.uuid4()"}


def main(directory: str | None = None) -> int:
    """Run the agent in a child process, SIGKILL it after the charge, recover it in a second
    child, and report. Exit status 0 only if the run completed with exactly one charge."""
    workdir = Path(directory or tempfile.mkdtemp(prefix="undying-demo-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    db_path = workdir / "undying.db"
    run_id = f"research-{secrets.token_hex(3)}"
    print("undying demo: SIGKILL a research agent in the middle of a payment, then recover it")
    print(f"journal {db_path}, payment ledger {workdir / LEDGER}\n")

    first = _spawn("start", run_id, workdir)
    print(f"process 1 (pid {first.pid}) starts run {run_id!r}")
    ran_first: dict[int, str] = {}
    charge_seq: int | None = None
    for seq, name, line in _lines(first):
        print(line)
        if seq is not None:
            ran_first[seq] = name
        if name == "charge_card":
            os.kill(first.pid, signal.SIGKILL)
            charge_seq = seq
            break
    first.wait()
    if charge_seq is None:
        print(f"\nFAILED: process 1 ended (exit status {first.returncode}) before it charged")
        return 1
    before, _, _ = asyncio.run(_inspect(db_path, run_id))
    if charge_seq in before:
        print(f"SIGKILL -> pid {first.pid} died after charge_card's result was journaled")
    else:
        print(f"SIGKILL -> pid {first.pid} died after the charge, before its result was journaled")
    print(f"  the journal holds {len(before)} entries (seq 0-{max(before, default=0)})\n")

    second = _spawn("recover", run_id, workdir)
    print(f"process 2 (pid {second.pid}) opens the same database: the run is recovered at once")
    ran_second: dict[int, str] = {}
    for seq, name, line in _lines(second):
        print(line)
        if seq is not None:
            ran_second[seq] = name
    second.wait()

    journal, status, result = asyncio.run(_inspect(db_path, run_id))
    print(f"\njournal of run {run_id!r} after recovery:")
    ok = status == "completed"
    for seq, name in journal.items():
        if seq in before and seq in ran_second:
            how, ok = "!! replayed, yet ran again in process 2", False
        elif seq in before:
            how = "replayed from the journal"
        elif seq in ran_first and seq in ran_second:
            how = "ran again in process 2: same idempotency key"
        elif seq in ran_second or not name.startswith("step "):  # ctx.now() & co print nothing
            how = "executed in process 2"
        else:
            how, ok = "!! recorded, but no process ran it", False
        print(f"  {seq:>2}  {name:<18} {how}")
    if ok:
        print(
            f"run completed in {result['turns']} turns, {result['seconds']} s including the crash:"
        )
        print(f"  {result['answer']}")
    else:
        print(f"run {status}")
    charges = _count_charges(workdir / LEDGER, run_id)
    ok = ok and charges == 1
    verdict = "exactly 1 charge" if charges == 1 else f"{charges} charges: WRONG"
    print(f"ledger holds {verdict} for run {run_id!r}")
    print(f"look for yourself: undying --db {db_path} show {run_id}")
    return 0 if ok else 1


def _spawn(role: str, run_id: str, workdir: Path) -> subprocess.Popen[str]:
    """A child process running the agent on ``workdir``'s database (``role``: start, recover)."""
    package_root = str(Path(undying.__file__).resolve().parent.parent)
    env = {
        **os.environ,
        "UNDYING_DATABASE_URL": str(workdir / "undying.db"),
        "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
        "PYTHONUNBUFFERED": "1",
    }
    code = f"from undying.demo import _child; _child({role!r}, {run_id!r})"
    return subprocess.Popen(
        [sys.executable, "-c", code], cwd=workdir, env=env, stdout=subprocess.PIPE, text=True
    )


def _lines(proc: subprocess.Popen[str]) -> Iterator[tuple[int | None, str, str]]:
    """(journal position, step name, text) for each line the child prints; a watchdog kills
    a child that hangs, so the demo always ends."""
    assert proc.stdout is not None
    watchdog = threading.Timer(_WATCHDOG_SECONDS, proc.kill)
    watchdog.start()
    try:
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            match = _STEP_LINE.match(line)
            if match:
                yield int(match[1]), match[2], line
            else:
                yield None, "", line
    finally:
        watchdog.cancel()
        proc.stdout.close()


def _child(role: str, run_id: str) -> None:
    async def go() -> None:
        async with app:  # opening the app recovers the runs a dead process left behind
            if role == "start":
                await (await app.start(research_agent, TASK, run_id=run_id)).result()
            else:
                await app.handle(run_id).result()

    asyncio.run(go())


async def _inspect(db_path: Path, run_id: str) -> tuple[dict[int, str], str, Any]:
    """The run's journal ({seq: "kind name"}), its status, and its result if it completed."""
    async with App(str(db_path), worker=False) as client:
        journal = {
            e.seq: _RECORDED.get(e.kind) or f"{e.kind} {e.name.rpartition(':')[2]}"
            for e in await client.store.load_journal_meta(run_id)
            if e.status in ("ok", "error")
        }
        handle = client.handle(run_id)
        status = await handle.status()
        result = await handle.result() if status == "completed" else None
    return journal, status, result


def _count_charges(ledger: Path, run_id: str) -> int:
    if not ledger.exists():
        return 0
    with closing(sqlite3.connect(ledger)) as db:
        row = db.execute(
            "SELECT count(*) FROM charges WHERE idempotency_key LIKE ?", (f"{run_id}:%",)
        ).fetchone()
    return int(row[0])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))
