"""Run every benchmark, one subprocess each, and print a summary of the headline figures.

    .venv/bin/python bench/run_all.py            # full runs (a few minutes)
    .venv/bin/python bench/run_all.py --quick    # small workloads, fewer repetitions
    .venv/bin/python bench/run_all.py --only step_overhead,replay
    .venv/bin/python bench/run_all.py --suite figures --out bench/results/undying.json

Each script prints its own tables; the lines it starts with ``SUMMARY`` are collected here.

``--suite figures`` is what ``make bench`` runs: the figures the project publishes (issue 12),
each script with the sizes those figures need, PostgreSQL included; every script writes its
figures as JSON and they are merged, with the machine and versions, into ``--out`` for
bench/report.py to turn into tables and plots.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as common
import _machine

SCRIPTS = ["step_overhead", "throughput", "replay", "startup", "hotpath"]

#: script -> (arguments of the full run, arguments of the quick smoke run)
FIGURES: dict[str, tuple[list[str], list[str]]] = {
    "step_overhead": (
        ["--steps", "100,1000", "--variants", "noop,work"],
        ["--steps", "20,100", "--variants", "noop", "--reps", "2"],
    ),
    "throughput": ([], ["-n", "100", "--reps", "2"]),
    "postgres": (["--steps", "100,1000"], ["--steps", "20,100", "--runs", "100", "--reps", "2"]),
    "replay": (["--steps", "1000,10000"], ["--steps", "100,1000", "--reps", "2"]),
    "startup": ([], ["--reps", "2"]),
    "storage_growth": ([], ["--turns", "20,100", "--reps", "1"]),
}


def _command(name: str, args: argparse.Namespace, json_path: Path | None) -> list[str]:
    cmd = [common.PYTHON, str(common.BENCH_DIR / f"{name}.py")]
    if args.suite == "figures":
        full, quick = FIGURES[name]
        cmd += quick if args.quick else full
    elif args.quick:
        cmd.append("--quick")
    if args.tmp and name != "postgres":
        cmd += ["--tmp", args.tmp]
    if json_path is not None:
        cmd += ["--json", str(json_path)]
    return cmd


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--suite", choices=["default", "figures"], default="default")
    p.add_argument("--only", default=None, help="comma list of scripts")
    p.add_argument("--tmp", default=None, help="parent directory of the database files")
    p.add_argument("--out", default=None, help="merge every figure into this JSON file")
    p.add_argument(
        "--server",
        default=os.environ.get(
            "UNDYING_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="PostgreSQL server recorded with the results (postgres.py's own --server)",
    )
    args = p.parse_args(argv)
    known = list(FIGURES) if args.suite == "figures" else SCRIPTS
    chosen = [s for s in (args.only or ",".join(known)).split(",") if s]
    unknown = set(chosen) - set(known)
    if unknown:
        p.error(f"unknown scripts for suite {args.suite}: {sorted(unknown)}; known: {known}")

    machine = _machine.describe(args.tmp or tempfile.gettempdir(), args.server, common.ROOT)
    summary: list[tuple[str, list[str]]] = []
    failed: list[str] = []
    figures: list[dict[str, Any]] = []
    runs: dict[str, Any] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="undying-bench-json-") as json_dir:
        for name in chosen:
            json_path = Path(json_dir) / f"{name}.json" if args.out else None
            cmd = _command(name, args, json_path)
            print(f"\n{'=' * 100}\n$ {' '.join(cmd)}\n{'=' * 100}", flush=True)
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=common.ROOT)
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith("SUMMARY "):
                    summary.append((name, [c.strip() for c in line[8:].split("|")]))
                else:
                    print(line, end="", flush=True)
            ok = proc.wait() == 0
            if not ok:
                failed.append(name)
            seconds = time.perf_counter() - t0
            runs[name] = {"command": cmd[1:], "seconds": round(seconds, 1), "ok": ok}
            if json_path is not None and json_path.exists():
                figures += json.loads(json_path.read_text())["figures"]
            print(f"({name}: {seconds:.1f} s)")

    print(f"\n{'=' * 100}")
    print(
        f"SUMMARY ({'quick' if args.quick else 'full'} run, "
        f"{time.perf_counter() - started:.0f} s; {common.env_line()})\n"
    )
    rows = [cells for _, cells in summary]
    print(common.table("", ["figure", "measured", "target", "status"], rows))
    if args.out:
        header = _machine.result_header(
            "undying", args.quick, time.perf_counter() - started, machine
        )
        common.write_json(
            args.out,
            {
                **header,
                "runs": runs,
                "failed": failed,
                "figures": figures,
            },
        )
        print(f"\nfigures written to {args.out}")
    if failed:
        print(f"\nFAILED to run: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
