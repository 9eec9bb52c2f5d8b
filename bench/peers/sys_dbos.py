"""DBOS Transact's side of the peer workloads: ``@DBOS.workflow`` / ``@DBOS.step``.

The system database is ``--db``: ``sqlite:///path`` or a PostgreSQL URL (the driver creates
and drops that database). DBOS is configured as its docs show, with nothing tuned: its SQLite
engine keeps SQLite's defaults (rollback journal, ``synchronous=FULL``: every commit is
fsynced); on PostgreSQL the server's ``synchronous_commit`` applies. ``application_version``
is pinned so that the process that recovers a workflow is the version that started it
(DBOS derives the version from the workflow source otherwise, which is the same here).

``--dbos-api sync`` (default) uses plain functions, DBOS's primary API; ``async`` uses
``async def`` workflows and steps.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import _shapes
import protocol
from dbos import DBOS


@DBOS.step(name="peers.noop")
def noop() -> None:
    return None


@DBOS.step(name="peers.one")
def one(i: int) -> int:
    return i + 1


@DBOS.step(name="peers.grow")
def grow(history: list[_shapes.Message], shape: str, turn: int) -> list[_shapes.Message]:
    return [*history, _shapes.message(shape, turn)]


@DBOS.step(name="peers.marker")
def marker() -> None:
    protocol.marker_sync()


@DBOS.workflow(name="peers.steps")
def steps_wf(n: int) -> int:
    for _ in range(n):
        noop()
    return n


@DBOS.workflow(name="peers.one")
def one_wf(i: int) -> int:
    return one(i)


@DBOS.workflow(name="peers.agent")
def agent_wf(n: int, shape: str) -> int:
    history: list[_shapes.Message] = []
    for turn in range(n):
        history = grow(history, shape, turn)
    return len(history)


@DBOS.workflow(name="peers.crashy")
def crashy_wf(steps: int, crash_at: int) -> int:
    for i in range(steps):
        if i == crash_at:
            marker()
        else:
            noop()
    return steps


@DBOS.step(name="peers.anoop")
async def anoop() -> None:
    return None


@DBOS.step(name="peers.aone")
async def aone(i: int) -> int:
    return i + 1


@DBOS.workflow(name="peers.asteps")
async def asteps_wf(n: int) -> int:
    for _ in range(n):
        await anoop()
    return n


@DBOS.workflow(name="peers.aone")
async def aone_wf(i: int) -> int:
    return await aone(i)


def _launch(args: argparse.Namespace) -> None:
    protocol.opening()
    DBOS(
        config={
            "name": "peers-bench",
            "system_database_url": args.db,
            "application_version": "peers-bench-1",
            "log_level": "WARNING",
        }
    )
    DBOS.launch()


def _sync(task: str, args: argparse.Namespace) -> None:
    if task == "overhead":
        steps_wf(10)
        start = time.perf_counter()
        DBOS.start_workflow(steps_wf, args.n).get_result()
        protocol.result(seconds=protocol.timed(start))
    elif task == "throughput":
        one_wf(-1)
        start = time.perf_counter()
        for i in range(args.count):
            assert DBOS.start_workflow(one_wf, i).get_result() == i + 1
        protocol.result(seconds=protocol.timed(start))
    elif task == "storage":
        start = time.perf_counter()
        if args.n:
            assert DBOS.start_workflow(agent_wf, args.n, args.shape).get_result() == args.n
        protocol.result(seconds=protocol.timed(start))
    elif task == "prepare":
        from dbos import SetWorkflowID

        with SetWorkflowID(args.run_id):
            DBOS.start_workflow(crashy_wf, args.steps, args.crash_at).get_result()
    else:  # recover: DBOS.launch() already resumed the pending workflow in a background thread
        assert DBOS.retrieve_workflow(args.run_id).get_result() == args.steps
        protocol.result(seconds=protocol.since_opening())


async def _async(task: str, args: argparse.Namespace) -> None:
    if task == "overhead":
        await asteps_wf(10)
        start = time.perf_counter()
        handle: Any = await DBOS.start_workflow_async(asteps_wf, args.n)
        await handle.get_result()
        protocol.result(seconds=protocol.timed(start))
    elif task == "throughput":
        await aone_wf(-1)
        start = time.perf_counter()
        for i in range(args.count):
            handle = await DBOS.start_workflow_async(aone_wf, i)
            assert await handle.get_result() == i + 1
        protocol.result(seconds=protocol.timed(start))
    else:
        raise SystemExit(f"--dbos-api async supports overhead and throughput, not {task}")


def run(task: str, args: argparse.Namespace) -> None:
    _launch(args)
    try:
        if args.dbos_api == "async":
            asyncio.run(_async(task, args))
        else:
            _sync(task, args)
    finally:
        DBOS.destroy(destroy_registry=True)
