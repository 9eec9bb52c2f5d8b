"""A worker process whose run hits code that takes workers down, then starts an ordinary run.

    python poison_worker.py DB SCENARIO

``SCENARIO`` picks what the run ``poison`` does:

* ``step-exit``      a step parses its arguments with argparse, which raises ``SystemExit(2)``
* ``thread-exit``    the same in a sync step (run in a thread)
* ``timeout-exit``   the same in an async step with a timeout (run in a task of its own)
* ``step-cancel``    a step raises ``asyncio.CancelledError`` from "library code"
* ``gather-cancel``  the same from one of two steps run in parallel with ``asyncio.gather``
* ``workflow-exit``  the workflow body itself raises ``SystemExit``, outside any step
* ``hard-exit``      after one ordinary step, a step ends the process with ``os._exit(1)``,
                     every time it runs (start the script again and again)

The script (a worker: it recovers whatever a dead process left) starts or recovers ``poison``,
waits for its outcome and prints ``outcome poison <json>``; then starts a fresh ordinary run
``after`` and prints ``outcome after <json>``. An outcome is ``{"result": ...}`` or
``{"error": <class name>, "error_type": ..., "message": ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from typing import Any

import undying
from undying import App, Context

DB, SCENARIO = sys.argv[1], sys.argv[2]
LEASE_TTL = 2.0  # short, so a run whose task died would be taken over (again) within seconds


class LibraryGaveUp(asyncio.CancelledError):
    """What a library raises when it cancels its own operation (not the caller's task)."""


@undying.step
async def prepare(task: str) -> str:
    return task.upper()


@undying.step
async def parse_flags(argv: list[str]) -> str:
    parser = argparse.ArgumentParser(prog="tool")
    parser.add_argument("--size", type=int, required=True)
    return str(parser.parse_args(argv).size)


@undying.step
def parse_flags_in_thread(argv: list[str]) -> str:
    parser = argparse.ArgumentParser(prog="tool")
    parser.add_argument("--size", type=int, required=True)
    return str(parser.parse_args(argv).size)


@undying.step(timeout=30)
async def parse_flags_with_timeout(argv: list[str]) -> str:
    parser = argparse.ArgumentParser(prog="tool")
    parser.add_argument("--size", type=int, required=True)
    return str(parser.parse_args(argv).size)


@undying.step(retries=3, retry_delay=0.01)
async def library_call(task: str) -> str:
    await asyncio.sleep(0)
    raise LibraryGaveUp(f"the client gave up on {task!r}")


@undying.step
async def die_hard(task: str) -> str:
    print(f"dying in pid {os.getpid()}", flush=True)
    os._exit(1)


app = App(DB, lease_ttl=LEASE_TTL, poll_interval=0.1)


@app.workflow(name="poison")
async def poison(ctx: Context, task: str) -> Any:
    if SCENARIO == "step-exit":
        return await parse_flags(["--colour", "red"])
    if SCENARIO == "thread-exit":
        return await parse_flags_in_thread(["--colour", "red"])
    if SCENARIO == "timeout-exit":
        return await parse_flags_with_timeout(["--colour", "red"])
    if SCENARIO == "step-cancel":
        return await library_call(task)
    if SCENARIO == "gather-cancel":
        return await asyncio.gather(prepare(task), library_call(task))
    if SCENARIO == "workflow-exit":
        await prepare(task)
        raise SystemExit("the workflow gave up")
    if SCENARIO == "hard-exit":
        prepared = await prepare(task)
        return await die_hard(prepared)
    raise AssertionError(f"unknown scenario {SCENARIO!r}")


@app.workflow(name="ordinary")
async def ordinary(ctx: Context, task: str) -> str:
    return await prepare(task)


def describe(exc: BaseException) -> dict[str, Any]:
    return {
        "error": type(exc).__name__,
        "error_type": getattr(exc, "error_type", ""),
        "message": str(exc),
    }


async def outcome(run_id: str, workflow: Any) -> dict[str, Any]:
    handle = await app.start(workflow, "task", run_id=run_id)
    try:
        return {"result": await handle.result(timeout=20)}
    except Exception as exc:
        return describe(exc)


async def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    async with app:
        for run_id, workflow in (("poison", poison), ("after", ordinary)):
            print(f"outcome {run_id} " + json.dumps(await outcome(run_id, workflow)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
