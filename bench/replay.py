"""Replay and recovery of long runs from their journal.

A. replay of a completed run, in process. A 10,000-step run is executed once; then, on a new
   ``App(worker=False)`` on the same file, ``undying.testing.replay_check(app)`` re-executes the
   workflow function from its journal (load metadata, fetch large payloads lazily, decode every
   recorded result, check kinds, names and argument digests). Timed from the call to its return.
   Baseline: reading the same journal rows with Python's sqlite3 (one SELECT, fetchall).

B. recovery of an interrupted run, in a fresh process. A child process executes the run and is
   SIGKILLed at step 10,000 (synchronised on its stdout). Then, per repetition, a copy of the
   crashed database is recovered by a new process (bench/_workload.py recover): the time from
   the start of ``async with app:`` to the first newly executed step, and the growth of peak RSS
   (VmHWM, reset via /proc/self/clear_refs just before opening) over that time.

Both for no-op steps (small int results) and for steps whose results are ~10 KB of text.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as common

import undying
from undying import App
from undying.testing import replay_check

TARGET_REPLAY_S = 0.3
TARGET_RECOVERY_S = 1.0
TARGET_RECOVERY_MB = 50.0
WORKLOAD = str(common.BENCH_DIR / "_workload.py")

_corpus: list[str] = []


def _text(i: int, size: int) -> str:
    if not _corpus:
        import random

        rng = random.Random(42)
        vocab = [
            "".join(rng.choice("etaoinshrdlucmfwypvbgkqjxz") for _ in range(rng.randint(2, 9)))
            for _ in range(3000)
        ]
        _corpus.append(" ".join(rng.choice(vocab) for _ in range(400_000)))
    corpus = _corpus[0]
    start = (i * 7919) % (len(corpus) - size)
    return corpus[start : start + size]


@undying.step(name="bench.replay_step")
async def replay_step(i: int, size: int) -> str | int:
    return _text(i, size) if size else i


async def long_run(ctx: undying.Context, steps: int, size: int) -> int:
    total = 0
    for i in range(steps):
        value = await replay_step(i, size)
        total += len(value) if isinstance(value, str) else 1
    return total


# -- A: replay of a completed run, in process --------------------------------------------------
async def _create(path: str, steps: int, size: int) -> float:
    app = App(path)
    wf = app.workflow(name="bench.long_run")(long_run)
    async with app:
        start = time.perf_counter()
        await (await app.start(wf, steps, size, run_id="long")).result()
        return time.perf_counter() - start


async def _replay_once(path: str) -> float:
    app = App(path, worker=False)
    app.workflow(name="bench.long_run")(long_run)
    async with app:
        start = time.perf_counter()
        problems = await replay_check(app)
        elapsed = time.perf_counter() - start
    if problems:
        raise RuntimeError(f"replay_check reported problems: {problems}")
    return elapsed


def _read_baseline(path: str) -> float:
    db = sqlite3.connect(path)
    start = time.perf_counter()
    rows = db.execute("SELECT * FROM journal WHERE run_id = 'long' ORDER BY seq").fetchall()
    elapsed = time.perf_counter() - start
    db.close()
    assert rows
    return elapsed


def bench_replay(files: common.FreshFiles, steps: int, size: int, reps: int) -> dict[str, Any]:
    path = files.path(f"replay-{size}")
    created = asyncio.run(_create(path, steps, size))
    asyncio.run(_replay_once(path))  # warm the page cache and the imports, unmeasured
    times, base = [], []
    for _ in range(reps):
        base.append(_read_baseline(path))
        times.append(asyncio.run(_replay_once(path)))
    return {
        "created": created,
        "replay": common.median(times),
        "spread": common.spread(times),
        "baseline": common.median(base),
        "db_mb": _db_size(path) / 1e6,
        "samples": {"replay": times, "baseline": base},
    }


def _db_size(path: str) -> int:
    return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))


# -- B: recovery of an interrupted run in a fresh process ---------------------------------------
def prepare_crashed(path: str, steps: int, crash_at: int, size: int) -> float:
    """Run the workload in a child and SIGKILL it at step ``crash_at``; seconds it ran."""
    start = time.perf_counter()
    child = subprocess.Popen(
        [common.PYTHON, WORKLOAD, "prepare", path, str(steps), str(crash_at), str(size)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    elapsed = time.perf_counter() - start
    child.send_signal(signal.SIGKILL)
    child.wait()
    if line.strip() != "READY":
        raise RuntimeError(f"the workload child did not reach the crash point: {line!r}")
    return elapsed


def copy_db(src: str, dst_dir: Path) -> str:
    dst = str(dst_dir / Path(src).name)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(src + suffix):
            shutil.copyfile(src + suffix, dst + suffix)
    return dst


def recover_once(
    path: str, steps: int, crash_at: int, size: int, env: dict[str, str] | None = None
) -> dict[str, float]:
    """Launch a recovering process; parse its FIRST line."""
    launched = time.time()
    child = subprocess.Popen(
        [common.PYTHON, WORKLOAD, "recover", path, str(steps), str(crash_at), str(size)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    out, _ = child.communicate(timeout=600)
    first = [ln for ln in out.splitlines() if ln.startswith("FIRST ")]
    if child.returncode != 0 or not first:
        raise RuntimeError(f"recovery process failed (rc={child.returncode}): {out!r}")
    _, stamp, since_open, growth_kb, rss_kb = first[0].split()
    return {
        "from_launch": float(stamp) - launched,
        "from_open": float(since_open),
        "growth_mb": int(growth_kb) * 1024 / 1e6,
        "rss_mb": int(rss_kb) * 1024 / 1e6,
    }


def bench_recovery(files: common.FreshFiles, steps: int, size: int, reps: int) -> dict[str, Any]:
    crashed = files.path(f"crashed-{size}")
    # steps + 1: `steps` completed payload steps, then the marker (the first new step)
    ran = prepare_crashed(crashed, steps + 1, steps, size)
    results = []
    recover_once(copy_db(crashed, Path(files.path("warm")).parent), steps + 1, steps, size)
    for _ in range(reps):
        fresh = copy_db(crashed, Path(files.path(f"recover-{size}")).parent)
        results.append(recover_once(fresh, steps + 1, steps, size))
    pick = {k: [r[k] for r in results] for k in results[0]}
    return {
        "ran": ran,
        "from_open": common.median(pick["from_open"]),
        "from_launch": common.median(pick["from_launch"]),
        "growth_mb": common.median(pick["growth_mb"]),
        "growth_max": max(pick["growth_mb"]),
        "rss_mb": common.median(pick["rss_mb"]),
        "spread": common.spread(pick["from_open"]),
        "db_mb": _db_size(crashed) / 1e6,
        "samples": pick,
    }


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--steps", default=None, help="journal lengths, a comma list (default 10000)")
    p.add_argument("--size", type=int, default=10_000, help="bytes per large result")
    args = p.parse_args(argv)
    all_steps = common.sizes(args.steps or ("2000" if args.quick else "10000"))
    reps = args.reps or (3 if args.quick else 5)
    figures = common.Figures("replay")
    print(f"replay and recovery: {all_steps}-step runs, median of {reps}")
    print(common.env_line())
    summary = []
    rows_a, rows_b = [], []
    with common.temp_dir(args.tmp) as root:
        files = common.FreshFiles(root)
        for steps, size in ((steps, size) for steps in all_steps for size in (0, args.size)):
            label = "small int results" if size == 0 else f"{size / 1000:g} KB results"
            r = bench_replay(files, steps, size, reps)
            meta = {"backend": "sqlite", "n": steps, "result_bytes": size}
            figures.add(
                f"replay.check.n{steps}.r{size}",
                f"replay_check, {label}",
                "s",
                r["samples"]["replay"],
                **meta,
            )
            figures.add(
                f"replay.check.n{steps}.r{size}.baseline",
                "baseline: SELECT journal rows, fetchall",
                "s",
                r["samples"]["baseline"],
                **meta,
            )
            rows_a.append(
                [
                    label,
                    steps,
                    r["db_mb"],
                    r["created"],
                    r["baseline"] * 1e3,
                    r["replay"],
                    r["replay"] / steps * 1e6,
                    r["replay"] / r["baseline"],
                    r["spread"],
                ]
            )
            print(f"  .. replay_check, {label}: {r['replay']:.3f} s", flush=True)
            if size == 0:
                summary.append(
                    common.summary_line(
                        f"replay of a completed {steps}-step run (replay_check)",
                        f"{r['replay']:.3f} s ({r['replay'] / steps * 1e6:.1f} us/step)",
                        f"<= {TARGET_REPLAY_S} s",
                        r["replay"] <= TARGET_REPLAY_S if steps == 10_000 else None,
                    )
                )
        for steps, size in ((steps, size) for steps in all_steps for size in (0, args.size)):
            label = "small int results" if size == 0 else f"{size / 1000:g} KB results"
            r = bench_recovery(files, steps, size, reps)
            meta = {"backend": "sqlite", "n": steps, "result_bytes": size}
            pick = r["samples"]
            key = f"replay.recovery.n{steps}.r{size}"
            figures.add(
                f"{key}.open",
                f"recovery, App open -> first new step, {label}",
                "s",
                pick["from_open"],
                **meta,
            )
            figures.add(
                f"{key}.launch",
                f"recovery, process launch -> first new step, {label}",
                "s",
                pick["from_launch"],
                **meta,
            )
            figures.add(
                f"{key}.rss_growth",
                f"recovery, peak RSS growth, {label}",
                "MB",
                pick["growth_mb"],
                **meta,
            )
            rows_b.append(
                [
                    label,
                    steps,
                    r["db_mb"],
                    r["from_open"],
                    r["from_launch"],
                    r["growth_mb"],
                    r["growth_max"],
                    r["rss_mb"],
                    r["spread"],
                ]
            )
            print(
                f"  .. recovery, {label}: {r['from_open']:.3f} s, "
                f"+{r['growth_mb']:.1f} MB peak RSS",
                flush=True,
            )
            target = size > 0 and steps == 10_000
            summary.append(
                common.summary_line(
                    f"recovery of an interrupted {steps}-step run, {label}",
                    f"{r['from_open']:.3f} s to first new step, +{r['growth_mb']:.1f} MB peak RSS",
                    f"<= {TARGET_RECOVERY_S} s, <= {TARGET_RECOVERY_MB:g} MB" if size else "(info)",
                    (r["from_open"] <= TARGET_RECOVERY_S and r["growth_max"] <= TARGET_RECOVERY_MB)
                    if target
                    else None,
                )
            )
    print()
    print(
        common.table(
            "A. replay_check of a completed run (in process; seconds unless stated)",
            [
                "results",
                "steps",
                "db MB",
                "first run",
                "baseline ms",
                "replay",
                "us/step",
                "x baseline",
                "replay min..max",
            ],
            rows_a,
        )
    )
    print("   baseline: SELECT * FROM journal WHERE run_id = ? ORDER BY seq, fetchall()")
    print()
    print(
        common.table(
            "B. recovery of a SIGKILLed run in a fresh process",
            [
                "results",
                "replayed",
                "db MB",
                "open->1st new s",
                "launch->1st new s",
                "peak RSS +MB",
                "max +MB",
                "RSS at open MB",
                "open->1st min..max",
            ],
            rows_b,
        )
    )
    print()
    print(
        f"targets: replay of 10,000 steps <= {TARGET_REPLAY_S} s; recovery of 10,000 steps "
        f"with 10 KB results <= {TARGET_RECOVERY_S} s and <= {TARGET_RECOVERY_MB:g} MB"
    )
    figures.write(args.json)
    common.emit_summary(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
