"""Per-call cost of a durable model call, against the same call on the bare client.

Both sides call ``chat.completions.create`` of a real ``openai.AsyncOpenAI`` against
undying.llm.testing's scripted server on loopback (in this process, so the server's own time is
in both figures). One repetition, on a fresh SQLite file:

* In one workflow, N pairs of calls: one on the plain client (max_retries=0, as the durable
  client uses; inside a workflow a plain call is just an HTTP call) and one through
  ``undying.llm.durable(client)``, a journaled step (digest of the request, one usage row, one
  journal write). Alternating them pairs each durable call with a bare one measured next to
  it, so drift of a shared machine cancels; each figure is the median per-call time.
* REPLAY: ``app.fork(run, from_step=N)`` of that run: every durable call answered from the
  journal (no request), rebuilt into a ``ChatCompletion``; the median of those calls.

The overhead is median(durable) - median(bare); the table gives the median over repetitions.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as common
import openai

import undying.llm
from undying import App, Context
from undying.llm.testing import ScriptedServer, reply

MESSAGES = [
    {"role": "system", "content": "You are a careful research assistant."},
    {"role": "user", "content": "Summarize what a durable agent is, in two sentences."},
]
ANSWER = "A durable agent journals each call. After a crash it replays and carries on."


async def one_rep(path: str, n: int) -> tuple[float, float, float]:
    """(bare, durable, replayed): median seconds per call."""
    async with ScriptedServer([reply(ANSWER)]) as server:
        raw = openai.AsyncOpenAI(base_url=server.openai_url, api_key="bench", max_retries=0)
        client = undying.llm.durable(raw)
        app = App(path)
        times: dict[str, list[float]] = {"bare": [], "durable": []}

        @app.workflow(name="bench.llm")
        async def calls(ctx: Context, count: int) -> int:
            for _ in range(count):
                started = time.perf_counter()
                await raw.chat.completions.create(model="bench", messages=MESSAGES)
                times["bare"].append(time.perf_counter() - started)
                started = time.perf_counter()
                await client.chat.completions.create(model="bench", messages=MESSAGES)
                times["durable"].append(time.perf_counter() - started)
            return count

        try:
            await raw.chat.completions.create(model="bench", messages=MESSAGES)  # warm up
            async with app:
                await (await app.start(calls, n, run_id="b1")).result()
                first = dict(times)
                times.update(bare=[], durable=[])
                sent = server.requests["chat.completions"]
                await (await app.fork("b1", from_step=n)).result()
                # The fork's plain calls still go out; its durable ones come from the journal.
                assert server.requests["chat.completions"] == sent + n, "replay sent requests"
        finally:
            await raw.close()
    return (
        common.median(first["bare"]),
        common.median(first["durable"]),
        common.median(times["durable"]),
    )


def main() -> None:
    args = common.parser(__doc__.splitlines()[0]).parse_args()
    n = 50 if args.quick else 200
    reps = args.reps or (3 if args.quick else 7)
    bare, durable, replay = [], [], []
    with common.temp_dir(args.tmp) as root:
        files = common.FreshFiles(root)
        for _ in range(reps):
            b, d, r = asyncio.run(one_rep(files.path("llm"), n))
            bare.append(b * 1e6)
            durable.append(d * 1e6)
            replay.append(r * 1e6)
    overhead = [d - b for b, d in zip(bare, durable, strict=True)]
    rows = [
        ["bare client call", common.median(bare), common.spread(bare)],
        ["durable call (first run)", common.median(durable), common.spread(durable)],
        ["durable overhead", common.median(overhead), common.spread(overhead)],
        ["replayed call (no request)", common.median(replay), common.spread(replay)],
    ]
    print(common.table(f"{n} calls x {reps} reps, us per call (median)", ["", "us", "spread"],
                       rows))
    print(common.env_line())
    common.emit_summary([
        common.summary_line("llm durable overhead per call",
                            f"{common.median(overhead):.0f} us", "-", None),
        common.summary_line("llm replayed call", f"{common.median(replay):.0f} us", "-", None),
    ])


if __name__ == "__main__":
    main()
