"""Token usage rows (undying.llm accounting), against every store."""

from __future__ import annotations

from store_helpers import NOW, MakeStore, opened, run, started

from undying.store.base import COMPLETED, SAVED, SPENT, UsageRow, UsageTotal


def _row(seq: int, **fields: object) -> UsageRow:
    values: dict[str, object] = {
        "run_id": "r1",
        "generation": 0,
        "seq": seq,
        "epoch": 1,
        "attempt": 1,
        "kind": SPENT,
        "provider": "openai",
        "model": "gpt-x",
        "outcome": "ok",
        "input_tokens": 10,
        "output_tokens": 3,
        "created_at": NOW,
    }
    values.update(fields)
    return UsageRow(**values)  # type: ignore[arg-type]


def test_usage_is_summed_per_kind_outcome_and_model(make_store: MakeStore) -> None:
    async def body() -> None:
        async with opened(make_store, "w1", "w2") as (a, b):
            await started(a, "r1")
            assert await a.load_usage("r1") == []
            await a.add_usage([_row(0), _row(1, attempt=1, outcome="error", input_tokens=0)])
            # Not fenced: a zombie of epoch 1 still records what it spent, next to epoch 2.
            await b.add_usage([_row(1, attempt=2, epoch=2), _row(2, model="gpt-y", epoch=2)])
            saved = _row(-1, kind=SAVED, attempt=0, outcome="saved", calls=1, epoch=3)
            await b.add_usage([saved])
            await b.add_usage([saved])  # saved rows of one execution add up
            totals = await a.load_usage("r1")
        assert totals == [
            UsageTotal(SAVED, "saved", "openai", "gpt-x", 2, 20, 6, 0),
            UsageTotal(SPENT, "error", "openai", "gpt-x", 1, 0, 3, 0),
            UsageTotal(SPENT, "ok", "openai", "gpt-x", 2, 20, 6, 0),
            UsageTotal(SPENT, "ok", "openai", "gpt-y", 1, 10, 3, 0),
        ]

    run(body())


def test_a_rewritten_usage_row_replaces_the_first(make_store: MakeStore) -> None:
    """A stream records what it spent when it starts and again when it ends: one call."""

    async def body() -> None:
        async with opened(make_store, "w1") as (store,):
            await started(store, "r1")
            await store.add_usage([_row(0, outcome="open", output_tokens=0)])
            await store.add_usage([_row(0, outcome="ok", output_tokens=42)])
            assert await store.load_usage("r1") == [
                UsageTotal(SPENT, "ok", "openai", "gpt-x", 1, 10, 42, 0)
            ]
            assert await store.load_usage("other") == []

    run(body())


def test_usage_goes_with_deleted_runs(make_store: MakeStore) -> None:
    async def body() -> None:
        async with opened(make_store, "w1") as (store,):
            await started(store, "r1")
            await store.add_usage([_row(0)])
            await store.finish_run(
                "r1", 1, COMPLETED, output=b"", error=None, pending=[], now=NOW - 100
            )
            assert await store.delete_finished_runs(NOW - 50) == 1
            assert await store.load_usage("r1") == []

    run(body())
