"""Run ids, child and fork ids, idempotency keys: no two things ever share one.

Users choose run ids from a plain charset without '~'; every id undying generates contains
'~', and keys add '#', which no run id contains. The property tests read ids and keys back
from the right, which proves the formats injective; the others reproduce, through real runs
and the real CLI, the collisions and refusals the earlier formats allowed.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import undying
from undying import App, Context, InvalidArgument, WorkflowCancelled
from undying.scope import idempotency_key_for
from undying.store.base import NewRun, RunRecord
from undying.testing import eventually, temp_app, wait_for_status
from undying.validation import (
    MAX_RUN_REF,
    check_run_id,
    check_run_ref,
    child_run_id,
    fork_run_id,
)

# Ids that the earlier formats ("run@gen:seq" keys, "parent.seq" / "parent@gen.seq" children,
# "run.fork-hex" forks) let a user's run share with a generated one.
_LOOKALIKES = ["acct", "acct@1", "job", "job.0", "job@1.0", "job.fork-0123abcd", "a:1", "a:1:2"]

user_ids = st.one_of(
    st.sampled_from(_LOOKALIKES),
    st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.:@+=-]{0,24}", fullmatch=True),
    st.builds(lambda c: c * 200, st.sampled_from("x9_")),
)
generations = st.integers(0, 3)
positions = st.integers(0, 12)
fork_tags = st.from_regex(r"[0-9a-f]{8}", fullmatch=True)
suffixes = st.one_of(
    st.tuples(st.just("child"), generations, positions),
    st.tuples(st.just("fork"), fork_tags, st.just(0)),
)


def _derive(user_id: str, steps: list[tuple[str, object, int]]) -> str:
    run_id = user_id
    for kind, first, second in steps:
        if kind == "fork":
            run_id = fork_run_id(run_id, str(first))
        else:
            assert isinstance(first, int)
            run_id = child_run_id(run_id, first, second)
    return run_id


run_ids = st.builds(_derive, user_ids, st.lists(suffixes, max_size=4))
calls = st.tuples(run_ids, generations, positions)


def _read_key(key: str) -> tuple[str, int, int]:
    head, _, seq = key.rpartition(":")
    run_id, hash_sign, generation = head.rpartition("#")
    if not hash_sign:
        return head, 0, int(seq)
    return run_id, int(generation), int(seq)


def _read_child_id(child_id: str) -> tuple[str, int, int]:
    parent, _, suffix = child_id.rpartition("~")
    generation, dot, seq = suffix.partition(".")
    return (parent, int(generation), int(seq)) if dot else (parent, 0, int(suffix))


@given(calls)
def test_a_key_and_a_child_id_name_their_run_generation_and_position(
    call: tuple[str, int, int],
) -> None:
    run_id, generation, seq = call
    assert "#" not in run_id
    assert _read_key(idempotency_key_for(run_id, generation, seq)) == call
    assert _read_child_id(child_run_id(run_id, generation, seq)) == call


@given(calls, calls)
@example(("acct", 1, 0), ("acct@1", 0, 0))
@example(("job", 0, 0), ("job.0", 0, 0))
@example(("job", 1, 0), ("job@1.0", 0, 0))
def test_distinct_calls_get_distinct_keys_and_child_ids(
    a: tuple[str, int, int], b: tuple[str, int, int]
) -> None:
    if a != b:
        assert idempotency_key_for(*a) != idempotency_key_for(*b)
        assert child_run_id(*a) != child_run_id(*b)


def test_no_two_ids_or_keys_alike_in_a_small_world() -> None:
    """Every run id from user ids that differ by a separator and a digit, nested two deep,
    and every call in it: random pairs rarely look alike, so this checks all of them."""
    tokens = ["", ".0", ".1", "@1", ":0", ":1", ".fork-0123abcd"]
    user = {f"a{t}{u}" for t in tokens for u in tokens}
    steps = [("child", g, q) for g in range(2) for q in range(2)] + [("fork", "0123abcd", 0)]
    nestings = [[], *([x] for x in steps), *([x, y] for x in steps for y in steps)]
    made: dict[str, tuple[str, int]] = {}
    for base in user:
        for i, nesting in enumerate(nestings):
            run_id = _derive(base, nesting)  # type: ignore[arg-type]
            assert made.setdefault(run_id, (base, i)) == (base, i), f"{run_id!r} made twice"
    runs = set(made)
    world = [(r, g, q) for r in runs for g in range(3) for q in range(3)]
    keys = {idempotency_key_for(*call) for call in world}
    children = {child_run_id(*call) for call in world}
    assert len(keys) == len(children) == len(world)


@given(run_ids, generations, positions, fork_tags)
def test_generated_ids_are_references_never_user_ids(
    run_id: str, generation: int, seq: int, tag: str
) -> None:
    for generated in (child_run_id(run_id, generation, seq), fork_run_id(run_id, tag)):
        assert check_run_ref(generated) == generated
        with pytest.raises(InvalidArgument, match="'~' is reserved"):
            check_run_id(generated)
    assert fork_run_id(run_id, tag) != child_run_id(run_id, generation, seq)


@pytest.mark.parametrize(
    "bad", ["job~", "job~x", "~0", "job~0~", "job~0.", "job~fork-XYZ", "a#1", "a b", "j" * 1001]
)
def test_references_to_runs_that_undying_cannot_have_made_are_refused(
    db_path: str, bad: str
) -> None:
    app = temp_app(db_path)

    async def main() -> None:
        async with app:
            with pytest.raises(InvalidArgument, match="malformed run id"):
                app.handle(bad)
            with pytest.raises(InvalidArgument, match="malformed run id"):
                await app.cancel(bad)
            with pytest.raises(InvalidArgument, match="malformed run id"):
                await app.send_event(bad, "go")

    asyncio.run(main())


def test_keys_of_a_later_generation_and_of_a_lookalike_run_differ(db_path: str) -> None:
    app = temp_app(db_path)
    provider: dict[str, int] = {}  # a payment provider: the first charge per key wins

    @undying.step
    async def charge(cents: int) -> None:
        provider.setdefault(undying.idempotency_key(), cents)

    @app.workflow(name="acct")
    async def acct(ctx: Context, period: int, cents: int) -> None:
        await charge(cents)
        if period == 0:
            ctx.continue_as_new(1, cents + 1)

    async def main() -> None:
        async with app:
            await (await app.start(acct, 0, 100, run_id="acct")).result(timeout=10)
            await (await app.start(acct, 1, 500, run_id="acct@1")).result(timeout=10)

    asyncio.run(main())
    assert sorted(provider.values()) == [100, 101, 500]  # three charges, none deduplicated away
    assert provider == {"acct:0": 100, "acct#1:0": 101, "acct@1:0": 500}


@pytest.mark.parametrize(("lookalike", "generation"), [("job.0", 0), ("job@1.0", 1)])
def test_a_users_run_is_never_taken_for_a_child(
    db_path: str, lookalike: str, generation: int
) -> None:
    app = temp_app(db_path)

    @app.workflow(name="other")
    async def other(ctx: Context) -> str:
        return "someone else's result"

    @app.workflow(name="kid")
    async def kid(ctx: Context, n: int) -> str:
        return f"own child {n}"

    @app.workflow(name="job")
    async def job(ctx: Context, n: int) -> str:
        if n < generation:
            ctx.continue_as_new(n + 1)
        return str(await ctx.call(kid, n))

    async def main() -> tuple[object, list[RunRecord]]:
        async with app:
            await (await app.start(other, run_id=lookalike)).result(timeout=10)
            result = await (await app.start(job, 0, run_id="job")).result(timeout=10)
            return result, await app.list_runs()

    result, runs = asyncio.run(main())
    assert result == f"own child {generation}"
    by_id = {r.run_id: r for r in runs}
    assert by_id[lookalike].parent_id is None
    assert by_id[child_run_id("job", generation, 0)].parent_id == "job"


def test_a_user_cannot_create_a_generated_id(db_path: str) -> None:
    app = temp_app(db_path)

    @app.workflow()
    async def wf(ctx: Context) -> None: ...

    async def main() -> None:
        async with app:
            source = await app.start(wf, run_id="src")
            await source.result(timeout=10)
            with pytest.raises(InvalidArgument, match="'~' is reserved"):
                await app.start(wf, run_id="job~0")
            with pytest.raises(InvalidArgument, match="'~' is reserved"):
                await app.fork("src", from_step=0, new_run_id="src~fork-0123abcd")
            forked = await app.fork("src", from_step=0)
            assert forked.run_id.startswith("src~fork-")
            await forked.result(timeout=10)
            again = await app.fork(forked.run_id, from_step=0)  # a generated id as the source
            assert check_run_ref(again.run_id).startswith(f"{forked.run_id}~fork-")
            await again.result(timeout=10)

    asyncio.run(main())


async def _until(app: App, run_id: str, status: str, seconds: float = 10.0) -> None:
    await wait_for_status(app.handle(run_id), status, timeout=seconds)


def _cli(db_path: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "undying", "--db", db_path, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_child_of_a_200_character_parent_can_be_handled_shown_and_cancelled(
    db_path: str,
) -> None:
    app = temp_app(db_path, suspend_after=0.0)
    parent_id = "p" * 200

    @app.workflow(name="waiter")
    async def waiter(ctx: Context) -> object:
        return await ctx.wait_for_event("go")

    @app.workflow(name="boss")
    async def boss(ctx: Context) -> object:
        kid = await ctx.start_child(waiter)
        return await kid.result()

    async def main() -> None:
        async with app:
            parent = await app.start(boss, run_id=parent_id)

            async def children() -> list[object]:
                return [r for r in await app.list_runs() if r.parent_id == parent_id]

            await eventually(app, children, what="the child's creation")
            kids = await children()
            child = app.handle(kids[0].run_id)  # type: ignore[attr-defined]
            assert child.run_id == parent_id + "~0"
            await _until(app, child.run_id, "waiting")
            shown = await asyncio.to_thread(_cli, db_path, "show", child.run_id)
            assert shown.returncode == 0, shown.stderr
            assert child.run_id in shown.stdout and "waiting" in shown.stdout
            cancelled = await asyncio.to_thread(_cli, db_path, "cancel", child.run_id)
            assert cancelled.returncode == 0, cancelled.stderr
            with pytest.raises(WorkflowCancelled):
                await child.result(timeout=10)
            with pytest.raises(WorkflowCancelled):
                await parent.result(timeout=10)

    asyncio.run(main())


def test_a_child_nested_past_the_id_limit_fails_its_parent_clearly(db_path: str) -> None:
    app = temp_app(db_path)
    deep_id = "n" * 200 + "~0" * 400  # 1,000 characters: its child's id would be longer
    assert len(deep_id) == MAX_RUN_REF

    @app.workflow(name="kid")
    async def kid(ctx: Context) -> None: ...

    @app.workflow(name="deep")
    async def deep(ctx: Context) -> None:
        await ctx.call(kid)

    async def main() -> list[RunRecord]:
        async with app:
            await app.store.create_run(
                NewRun(deep_id, "deep", app.codec.encode([[], {}])),
                owner=None,
                lease_expires=0.0,
                now=time.time(),
            )
            with pytest.raises(InvalidArgument, match="nested too deep"):
                await app.handle(deep_id).result(timeout=10)
            return await app.list_runs()

    assert [r.run_id for r in asyncio.run(main())] == [deep_id]  # no child was started


def test_a_fork_whose_default_id_would_be_too_long_asks_for_one(db_path: str) -> None:
    app = temp_app(db_path)
    source_id = "s" * 200 + "~0" * 395  # 990 characters: "~fork-<8 hex>" would pass 1,000

    async def main() -> RunRecord | None:
        async with app:
            await app.store.create_run(
                NewRun(source_id, "gone", app.codec.encode([[], {}])),
                owner="elsewhere",
                lease_expires=time.time() + 60,
                now=time.time(),
            )
            with pytest.raises(InvalidArgument, match="pass new_run_id"):
                await app.fork(source_id, from_step=0)
            forked = await app.fork(source_id, from_step=0, new_run_id="short")
            return await app.store.get_run(forked.run_id)

    record = asyncio.run(main())
    assert record is not None and record.workflow == "gone"


@pytest.mark.parametrize("generation", [0, 1])
def test_a_parent_in_flight_across_the_upgrade_keeps_its_old_format_children(
    db_path: str, generation: int
) -> None:
    """Before '~', children were "parent.seq" ("parent@gen.seq" later): a parent that was
    waiting on one when the new code took over must join it, not start a second child."""
    executed: list[str] = []
    app = temp_app(db_path)

    @app.workflow(name="kid")
    async def kid(ctx: Context, tag: str) -> str:
        executed.append(tag)
        return f"new {tag}"

    @app.workflow(name="legacy")
    async def legacy(ctx: Context) -> list[object]:
        first = await ctx.call(kid, "a")  # position 0: in flight, no journal entry yet
        handle = await ctx.start_child(kid, "b")  # position 1: journaled with the old id
        return [first, await handle.result(), handle.run_id]

    def old(seq: int) -> str:
        return f"legacy@{generation}.{seq}" if generation else f"legacy.{seq}"

    async def plant() -> None:  # what the earlier code left in the database
        async with App(db_path, worker=False) as client:
            store, codec, now = client.store, client.codec, time.time()
            for run in (
                NewRun("legacy", "legacy", codec.encode([[], {}])),
                NewRun(old(0), "kid", codec.encode([["a"], {}]), parent_id="legacy"),
                NewRun(old(1), "kid", codec.encode([["b"], {}]), parent_id="legacy"),
            ):
                await store.create_run(run, owner=None, lease_expires=now, now=now)
            with sqlite3.connect(db_path) as db:
                db.execute("UPDATE runs SET generation = ? WHERE run_id = 'legacy'", (generation,))
                for seq, tag in ((0, "a"), (1, "b")):
                    db.execute(
                        "UPDATE runs SET status = 'completed', output = ? WHERE run_id = ?",
                        (codec.encode(f"old {tag}"), old(seq)),
                    )
                db.execute(
                    "INSERT INTO journal (run_id, seq, kind, name, status, attempt, started_at,"
                    " finished_at, payload) VALUES ('legacy', 1, 'child', 'kid', 'ok', 1, ?, ?, ?)",
                    (now, now, codec.encode(old(1))),
                )

    async def main() -> tuple[object, list[str]]:
        async with app:
            result = await app.handle("legacy").result(timeout=10)
            return result, sorted(r.run_id for r in await app.list_runs())

    asyncio.run(plant())
    result, ids = asyncio.run(main())
    assert result == ["old a", "old b", old(1)]
    assert executed == []  # neither child ran a second time
    assert ids == sorted(["legacy", old(0), old(1)])
