"""Temporal's side of the peer workloads: a worker in this process, activities as steps.

``--db`` is the address of the dev server the driver started (``temporal server start-dev
--db-filename FILE``: SQLite persistence with the CLI's defaults, rollback journal and
``synchronous=FULL``). Each child uses its own task queue (``--task-queue``), so nothing
left over from an earlier repetition is picked up by this worker. Workflows are in
temporal_workflows.py; activities, async, here.

Recovery: the prepare child is SIGKILLed inside the marker activity. A new worker process
starts; the server knows nothing of the death until the activity's start-to-close timeout
expires, then retries it (default retry policy, 1 s initial interval) on the task queue,
where the new worker runs it. So Temporal's figure includes that timeout by design.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

import _shapes
import protocol
from temporal_workflows import WORKFLOWS
from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker


@activity.defn(name="peers.noop")
async def noop() -> None:
    return None


@activity.defn(name="peers.one")
async def one(i: int) -> int:
    return i + 1


@activity.defn(name="peers.grow")
async def grow(history: list[dict[str, Any]], shape: str, turn: int) -> list[dict[str, Any]]:
    # Any, not object: Temporal's converter decodes arguments by their type hints and has no
    # conversion for `object`
    return [*history, _shapes.message(shape, turn)]


@activity.defn(name="peers.marker")
async def marker() -> None:
    await protocol.marker_async()


ACTIVITIES = [noop, one, grow, marker]


async def _main(task: str, args: argparse.Namespace) -> None:
    protocol.opening()
    client = await Client.connect(args.db)
    queue = args.task_queue
    timeout = args.activity_timeout

    def start(workflow: str, *wf_args: object, wf_id: str | None = None) -> object:
        return client.execute_workflow(
            workflow, args=[*wf_args, timeout], id=wf_id or uuid.uuid4().hex, task_queue=queue
        )

    async with Worker(client, task_queue=queue, workflows=WORKFLOWS, activities=ACTIVITIES):
        if task == "overhead":
            await start("peers.steps", 10)
            begin = time.perf_counter()
            assert await start("peers.steps", args.n) == args.n
            protocol.result(seconds=protocol.timed(begin))
        elif task == "throughput":
            await start("peers.one", -1)
            begin = time.perf_counter()
            for i in range(args.count):
                assert await start("peers.one", i) == i + 1
            protocol.result(seconds=protocol.timed(begin))
        elif task == "storage":
            begin = time.perf_counter()
            if args.n:
                try:
                    assert await start("peers.agent", args.n, args.shape) == args.n
                except Exception as exc:  # the server's history or payload limits
                    protocol.result(seconds=protocol.timed(begin), error=_describe(exc))
                    return
            protocol.result(seconds=protocol.timed(begin))
        elif task == "prepare":
            await start("peers.crashy", args.steps, args.crash_at, wf_id=args.run_id)
        else:  # recover: this worker picks the retried marker activity up
            handle = client.get_workflow_handle(args.run_id)
            assert await handle.result() == args.steps
            protocol.result(seconds=protocol.since_opening())


def _describe(exc: BaseException) -> str:
    parts = []
    while exc is not None:
        parts.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__  # type: ignore[assignment]
    return " <- ".join(parts)


def run(task: str, args: argparse.Namespace) -> None:
    asyncio.run(_main(task, args))
