"""Child process for the crash/recovery benchmarks (replay.py, startup.py); not a benchmark.

    python bench/_workload.py prepare DB STEPS CRASH_AT SIZE
        Starts run "bench-run": STEPS journaled steps, except that the step at position
        CRASH_AT is the "marker" step. In this mode the marker prints READY and hangs; the
        parent then SIGKILLs the process, leaving the run interrupted with CRASH_AT completed
        steps in its journal.

    python bench/_workload.py recover DB STEPS CRASH_AT SIZE
        Opens an App on DB (its worker recovers the interrupted run at once). The run replays
        CRASH_AT steps from the journal and then calls the marker for real: the marker is the
        first newly executed step. It prints one line,
        ``FIRST <time.time()> <seconds since App open began> <peak RSS growth kB> <RSS kB>``,
        and the run goes on to finish.

SIZE > 0 makes every step return about SIZE bytes of text-like data (compressible roughly
like prose); SIZE = 0 makes every step return a small int.

The imports are kept to what an application needs, so that timing this process from the
outside measures interpreter start + ``import undying`` + recovery, not benchmark scaffolding.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import undying

MODE, DB = sys.argv[1], sys.argv[2]
STEPS, CRASH_AT, SIZE = (int(a) for a in sys.argv[3:6])

_corpus: str | None = None


def _text(i: int, size: int) -> str:
    """About ``size`` bytes of word soup, different for every i, deterministic."""
    global _corpus
    if _corpus is None:
        import random

        rng = random.Random(42)
        vocab = [
            "".join(rng.choice("etaoinshrdlucmfwypvbgkqjxz") for _ in range(rng.randint(2, 9)))
            for _ in range(3000)
        ]
        _corpus = " ".join(rng.choice(vocab) for _ in range(400_000))
    start = (i * 7919) % (len(_corpus) - size)
    return _corpus[start : start + size]


@undying.step(name="bench.payload")
async def payload(i: int, size: int) -> str | int:
    return _text(i, size) if size else i


@undying.step(name="bench.marker")
async def marker() -> None:
    if MODE == "prepare":
        print("READY", flush=True)
        await asyncio.sleep(3600)  # the parent kills us here
        return
    now = time.time()
    since_open = time.perf_counter() - _opened_at
    peak = _status_kb("VmHWM")
    print(
        f"FIRST {now!r} {since_open!r} {peak - _rss_before} {_rss_before}",
        flush=True,
    )


def _status_kb(field: str) -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0); harmless where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


app = undying.App(DB)


@app.workflow(name="bench.workload")
async def workload(ctx: undying.Context, steps: int, crash_at: int, size: int) -> int:
    total = 0
    for i in range(steps):
        if i == crash_at:
            await marker()
            continue
        value = await payload(i, size)
        total += len(value) if isinstance(value, str) else 1
    return total


_opened_at = 0.0
_rss_before = 0


async def main() -> None:
    global _opened_at, _rss_before
    if MODE == "prepare":
        async with app:
            handle = await app.start(workload, STEPS, CRASH_AT, SIZE, run_id="bench-run")
            await handle.result()
        return
    _reset_peak()
    _rss_before = _status_kb("VmRSS")
    _opened_at = time.perf_counter()
    async with app:
        await app.handle("bench-run").result()


if __name__ == "__main__":
    asyncio.run(main())
    sys.stdout.flush()
    os._exit(0)
