"""The storage contract for counting take-overs without progress (the quarantine's input).

Every claim notes where the run's journal stands (``progress_mark``); a take-over that finds
it unmoved counts one more in ``stalled_takeovers``, any claim that finds it moved resets the
count, and ``resume_run`` resets it too. The worker decides on quarantine from the claim.
"""

from __future__ import annotations

from store_helpers import LEASE, NOW, MakeStore, claim, entry, opened, run, started

from undying.store.base import FAILED, Claim, Store, progress_position


async def take_over(store: Store, owner: str, at: float) -> Claim:
    """The run's lease has expired at ``at``: take it over (exactly one run is due)."""
    [c] = await claim(store, owner, now=at)
    assert c.takeover
    return c


def counts(c: Claim) -> tuple[int, tuple[int, int]]:
    return c.run.stalled_takeovers, progress_position(c.run.progress_mark)


def test_takeovers_without_progress_count_and_progress_resets_the_count(
    make_store: MakeStore,
) -> None:
    async def body() -> None:
        async with opened(make_store, "w1", "w2") as (a, b):
            await started(a, "r1", owner="w1")  # the owner dies before journaling anything
            at = LEASE + 1
            c = await take_over(b, "w2", at)
            assert (c.run.epoch, *counts(c)) == (2, 1, (0, 0))
            at += 61
            c = await take_over(a, "w1", at)
            assert (c.run.epoch, *counts(c)) == (3, 2, (0, 0))
            rec = await a.get_run("r1")
            assert rec is not None and rec.stalled_takeovers == 2  # visible to readers too

            await a.write_entries("r1", 3, [entry(0), entry(1)])  # progress, then death
            at += 61
            c = await take_over(b, "w2", at)
            assert counts(c) == (0, (0, 2))
            at += 61
            c = await take_over(a, "w1", at)
            assert counts(c) == (1, (0, 2))

            # Rewriting an open entry at the same position does not move the journal's end.
            await a.write_entries("r1", c.run.epoch, [entry(2, "intent", None)])
            at += 61
            c = await take_over(b, "w2", at)
            assert counts(c) == (0, (0, 3))
            await b.write_entries("r1", c.run.epoch, [entry(2, "error", b"in doubt")])
            at += 61
            c = await take_over(a, "w1", at)
            assert counts(c) == (1, (0, 3))

    run(body())


def test_claims_of_pending_or_woken_runs_reset_on_progress_but_never_count(
    make_store: MakeStore,
) -> None:
    async def body() -> None:
        async with opened(make_store, "w1") as (store,):
            await started(store, "r1")
            c = await take_over(store, "w1", LEASE + 1)
            assert counts(c) == (1, (0, 0))
            # Handed back on a graceful shutdown, then claimed: not a take-over, no count.
            await store.release_runs("w1", ["r1"], NOW)
            [c] = await claim(store, "w1")
            assert (c.takeover, *counts(c)) == (False, 1, (0, 0))
            # It journals, waits, and is woken: the claim sees the progress.
            await store.suspend_run(
                "r1", c.run.epoch, wake_at=NOW, wait_events=[], pending=[entry(0)], now=NOW
            )
            [c] = await claim(store, "w1", now=NOW + 1)
            assert (c.takeover, *counts(c)) == (False, 0, (0, 1))

    run(body())


def test_a_new_generation_is_progress_even_at_the_same_position(make_store: MakeStore) -> None:
    async def body() -> None:
        async with opened(make_store, "w1") as (store,):
            await started(store, "r1")
            await store.write_entries("r1", 1, [entry(0), entry(1)])
            c = await take_over(store, "w1", LEASE + 1)
            assert counts(c) == (0, (0, 2))
            await store.continue_as_new("r1", c.run.epoch, b"next", NOW)
            await store.write_entries("r1", c.run.epoch, [entry(0), entry(1)])
            c = await take_over(store, "w1", LEASE + 62)
            assert counts(c) == (0, (1, 2))

    run(body())


def test_resume_resets_the_count(make_store: MakeStore) -> None:
    async def body() -> None:
        async with opened(make_store, "w1") as (store,):
            await started(store, "r1")
            at = LEASE + 1
            for expected in (1, 2, 3):
                c = await take_over(store, "w1", at)
                assert c.run.stalled_takeovers == expected
                at += 61
            await store.finish_run(
                "r1", c.run.epoch, FAILED, output=None, error=b"quarantined", pending=[], now=NOW
            )
            assert await store.resume_run("r1", NOW)
            rec = await store.get_run("r1")
            assert rec is not None and (rec.status, rec.stalled_takeovers) == ("pending", 0)
            [c] = await claim(store, "w1", now=at)
            assert (c.takeover, c.run.stalled_takeovers) == (False, 0)
            c = await take_over(store, "w1", at + 61)
            assert c.run.stalled_takeovers == 1  # it starts counting from zero again

    run(body())
