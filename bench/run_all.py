"""Run every benchmark, one subprocess each, and print a summary of the headline figures.

    .venv/bin/python bench/run_all.py            # full runs (a few minutes)
    .venv/bin/python bench/run_all.py --quick    # small workloads, fewer repetitions
    .venv/bin/python bench/run_all.py --only step_overhead,replay

Each script prints its own tables; the lines it starts with ``SUMMARY`` are collected here.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as common

SCRIPTS = ["step_overhead", "throughput", "replay", "startup", "hotpath"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", default=",".join(SCRIPTS), help="comma list of scripts")
    args = p.parse_args(argv)
    chosen = [s for s in args.only.split(",") if s]
    unknown = set(chosen) - set(SCRIPTS)
    if unknown:
        p.error(f"unknown scripts: {sorted(unknown)}; known: {SCRIPTS}")

    summary: list[tuple[str, list[str]]] = []
    failed: list[str] = []
    started = time.perf_counter()
    for name in chosen:
        cmd = [common.PYTHON, str(common.BENCH_DIR / f"{name}.py")]
        if args.quick:
            cmd.append("--quick")
        print(f"\n{'=' * 100}\n$ {' '.join(cmd)}\n{'=' * 100}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=common.ROOT)
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("SUMMARY "):
                summary.append((name, [c.strip() for c in line[8:].split("|")]))
            else:
                print(line, end="", flush=True)
        if proc.wait() != 0:
            failed.append(name)
        print(f"({name}: {time.perf_counter() - t0:.1f} s)")

    print(f"\n{'=' * 100}")
    print(
        f"SUMMARY ({'quick' if args.quick else 'full'} run, "
        f"{time.perf_counter() - started:.0f} s; {common.env_line()})\n"
    )
    rows = [cells for _, cells in summary]
    print(common.table("", ["figure", "measured", "target", "status"], rows))
    if failed:
        print(f"\nFAILED to run: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
