"""Temporal workflow definitions of the peer workloads (imported into Temporal's sandbox).

Kept apart from sys_temporal.py because Temporal's worker re-imports a workflow's module
inside a sandbox that rejects non-deterministic imports; this one imports only the SDK.
Activities are called by name, so their module is never imported here. Each step is one
activity with a ``start_to_close_timeout`` (required; 10 s is the value Temporal's samples
use for short activities, ``--activity-timeout``), which is also how long the server waits
before it retries an activity whose worker died.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow


@workflow.defn(name="peers.steps")
class Steps:
    @workflow.run
    async def run(self, n: int, timeout: float) -> int:
        for _ in range(n):
            await workflow.execute_activity(
                "peers.noop", start_to_close_timeout=timedelta(seconds=timeout)
            )
        return n


@workflow.defn(name="peers.one")
class One:
    @workflow.run
    async def run(self, i: int, timeout: float) -> int:
        result: int = await workflow.execute_activity(
            "peers.one", i, start_to_close_timeout=timedelta(seconds=timeout)
        )
        return result


@workflow.defn(name="peers.agent")
class Agent:
    @workflow.run
    async def run(self, n: int, shape: str, timeout: float) -> int:
        history: list[dict[str, Any]] = []
        for turn in range(n):
            history = await workflow.execute_activity(
                "peers.grow",
                args=[history, shape, turn],
                start_to_close_timeout=timedelta(seconds=timeout),
            )
        return len(history)


@workflow.defn(name="peers.crashy")
class Crashy:
    @workflow.run
    async def run(self, steps: int, crash_at: int, timeout: float) -> int:
        for i in range(steps):
            name = "peers.marker" if i == crash_at else "peers.noop"
            await workflow.execute_activity(name, start_to_close_timeout=timedelta(seconds=timeout))
        return steps


WORKFLOWS = [Steps, One, Agent, Crashy]
