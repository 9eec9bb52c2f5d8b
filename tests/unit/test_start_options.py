"""``app.start`` options for event-driven and multi-tenant agents: ``dedup_key`` with
``dedup_window`` (a webhook delivered twice starts one run) and ``concurrency_key`` on a queue
with ``per_key_concurrency`` (one agent per user at a time). The stores' side of both is in
the contract suite (tests/contract/test_store_contract_schedules.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from collections.abc import Callable

import pytest

import undying
from undying import App, Context, InvalidArgument
from undying.testing import temp_app


def test_a_start_within_the_window_returns_the_first_run(
    db_path: str, run: Callable[..., object]
) -> None:
    app = temp_app(db_path)
    client = temp_app(db_path, worker=False)
    executed: list[str] = []

    @app.workflow(name="on_payment")
    async def on_payment(ctx: Context, delivery: dict[str, str]) -> str:
        executed.append(ctx.run_id)
        return delivery["id"]

    client.workflow(name="on_payment")(on_payment)

    async def main() -> tuple[str, str, str]:
        async with app, client:
            window = dt.timedelta(minutes=10)
            first = await app.start(
                on_payment, {"id": "evt_1"}, dedup_key="evt_1", dedup_window=window
            )
            # The webhook is delivered again, to another process: the same run.
            again = await client.start(
                "on_payment", {"id": "evt_1"}, dedup_key="evt_1", dedup_window=60.0
            )
            other = await client.start(
                "on_payment", {"id": "evt_2"}, dedup_key="evt_2", dedup_window=window
            )
            assert await again.result(timeout=10) == "evt_1"
            assert await other.result(timeout=10) == "evt_2"
            return first.run_id, again.run_id, other.run_id

    first, again, other = run(main())
    assert again == first and other != first
    assert sorted(executed) == sorted([first, other])  # two runs, each executed once


ACTIVE: Counter[str] = Counter()
PEAK: Counter[str] = Counter()
GATE: list[asyncio.Event] = []


@undying.step
async def hold(user: str) -> None:
    ACTIVE[user] += 1
    PEAK[user] = max(PEAK[user], ACTIVE[user])
    await GATE[0].wait()
    ACTIVE[user] -= 1


def test_one_agent_per_user_at_a_time(db_path: str, run: Callable[..., object]) -> None:
    app = temp_app(db_path, poll_interval=0.05)
    llm = app.queue("llm", per_key_concurrency=1)
    ACTIVE.clear()
    PEAK.clear()

    @app.workflow()
    async def agent(ctx: Context, user: str) -> str:
        await hold(user)
        return user

    async def main() -> list[str]:
        GATE[:] = [asyncio.Event()]
        async with app:
            users = ["ann", "ann", "ann", "bob", "bob", "cy"]
            handles = [await app.start(agent, u, queue=llm, concurrency_key=u) for u in users]
            while sum(ACTIVE.values()) < 3:  # one each for ann, bob and cy, then they block
                await app.wait_for_change(0.05)
            assert dict(ACTIVE) == {"ann": 1, "bob": 1, "cy": 1}
            GATE[0].set()
            return [await h.result(timeout=30) for h in handles]

    assert run(main()) == ["ann", "ann", "ann", "bob", "bob", "cy"]
    assert dict(PEAK) == {"ann": 1, "bob": 1, "cy": 1}


def _app() -> App:
    app = App("memory://", strict=True)
    app.queue("llm", per_key_concurrency=2)
    app.queue("plain", concurrency=5)

    @app.workflow(name="wf")
    async def wf(ctx: Context) -> None:
        return None

    return app


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"dedup_key": "k"}, "dedup_key needs dedup_window"),
        ({"dedup_window": 60}, "dedup_window needs dedup_key"),
        ({"dedup_key": "k", "dedup_window": -1}, "dedup_window must not be negative"),
        ({"dedup_key": "k", "dedup_window": dt.timedelta(0)}, "dedup_window must be a positive"),
        ({"dedup_key": "k", "dedup_window": float("inf")}, "positive, finite"),
        ({"dedup_key": "k", "dedup_window": "1h"}, "dedup_window takes seconds"),
        ({"dedup_key": "", "dedup_window": 60}, "dedup_key must be a string of 1-200"),
        ({"dedup_key": 7, "dedup_window": 60}, "dedup_key must be a string"),
        ({"concurrency_key": "ann"}, "concurrency_key needs queue="),
        ({"concurrency_key": "ann", "queue": "plain"}, "queue 'plain' has no per-key limit"),
        ({"concurrency_key": "", "queue": "llm"}, "concurrency_key must be a string"),
        ({"concurrency_key": 3, "queue": "llm"}, "concurrency_key must be a string"),
    ],
)
def test_bad_start_options_are_refused(
    options: dict[str, object], message: str, run: Callable[..., object]
) -> None:
    app = _app()

    async def main() -> None:
        async with app:
            with pytest.raises(InvalidArgument, match=message):
                await app.start("wf", **options)  # type: ignore[arg-type]
            assert await app.list_runs() == []  # nothing was created

    run(main())


def test_a_per_key_limit_must_be_a_whole_number() -> None:
    app = App("memory://")
    for bad in (0, -1, 1.5, True, "1"):
        with pytest.raises(InvalidArgument, match="per_key_concurrency must be a whole number"):
            app.queue("q", per_key_concurrency=bad)  # type: ignore[arg-type]
