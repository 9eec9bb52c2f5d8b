"""Helpers shared by the benchmark scripts (not a benchmark itself).

Benchmarks print figures; they do not assert. Every figure is the median of several
repetitions, and a ratio is always taken against a baseline measured in the same process,
in the same run, on the same kind of file, so that the machine's speed cancels out.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
PYTHON = sys.executable
JOURNAL_DDL_FILE = ROOT / "src" / "undying" / "store" / "sql" / "sqlite" / "001_init.sql"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="fewer repetitions, smaller workloads")
    p.add_argument("--reps", type=int, default=None, help="repetitions per figure (median)")
    p.add_argument(
        "--tmp",
        default=None,
        help="directory for the database files (default: a fresh temp dir; same file system "
        "as $TMPDIR)",
    )
    p.add_argument(
        "--json",
        default=None,
        metavar="PATH",
        help="also write every figure (median, min, max, samples) to PATH as JSON",
    )
    return p


def sizes(text: str) -> list[int]:
    """``"100,1000"`` -> [100, 1000]: the workload sizes a script measures, in order."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SystemExit(f"sizes must be comma-separated integers, not {text!r}") from None
    if not values or min(values) <= 0:
        raise SystemExit(f"sizes must be positive integers, not {text!r}")
    return values


@contextlib.contextmanager
def temp_dir(base: str | None = None) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="undying-bench-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class FreshFiles:
    """Hands out a new database path per repetition inside one temp dir."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.n = 0

    def path(self, label: str) -> str:
        self.n += 1
        folder = self.root / f"{self.n:04d}-{label}"
        folder.mkdir()
        return str(folder / "bench.db")


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float]) -> str:
    """min..max, as a hint of noise."""
    return f"{min(values):.4g}..{max(values):.4g}"


def timed(fn: Callable[[], Any]) -> float:
    """Seconds taken by fn(), with the garbage collector settled first."""
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table: numeric columns right-aligned, text columns left-aligned."""
    numeric = [
        i > 0 and all(isinstance(row[i], int | float) or row[i] == "" for row in rows)
        for i in range(len(headers))
    ]
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [title, ""] if title else []
    for n, row in enumerate(cells):
        parts = [
            row[i].rjust(widths[i]) if numeric[i] else row[i].ljust(widths[i])
            for i in range(len(row))
        ]
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value >= 1000:
            return f"{value:,.0f}"
        if value >= 100:
            return f"{value:.1f}"
        if value >= 10:
            return f"{value:.2f}"
        return f"{value:.3f}"
    return str(value)


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def emit_summary(lines: list[str]) -> None:
    """Machine-readable lines for run_all.py: ``SUMMARY <figure> | <value> | <target> | <ok>``."""
    for line in lines:
        print(f"SUMMARY {line}")


def summary_line(figure: str, value: str, target: str, ok: bool | None) -> str:
    state = "-" if ok is None else verdict(ok)
    return f"{figure} | {value} | {target} | {state}"


class Figures:
    """The figures a script measured, kept with their samples for ``--json``.

    One figure is one measured quantity of one system under one configuration: its unit, the
    median of its repetitions, min, max and every sample, so that bench/report.py can build
    tables and plots without re-measuring, and a reader can see the spread. ``better`` says
    which direction is an improvement ("lower" for times and bytes, "higher" for rates).
    """

    def __init__(self, script: str) -> None:
        self.script = script
        self.items: list[dict[str, Any]] = []

    def add(
        self,
        figure_id: str,
        label: str,
        unit: str,
        samples: Sequence[float],
        *,
        better: str = "lower",
        **meta: Any,
    ) -> dict[str, Any]:
        values = [float(v) for v in samples]
        item = {
            "id": figure_id,
            "script": self.script,
            "label": label,
            "unit": unit,
            "better": better,
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
            "samples": values,
            **meta,
        }
        self.items.append(item)
        return item

    def write(self, path: str | None) -> None:
        if path:
            write_json(path, {"script": self.script, "figures": self.items})


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Writes atomically (temp file + rename), so a killed run never leaves half a file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    tmp.replace(target)


def paired_ratios(top: Sequence[float], bottom: Sequence[float]) -> list[float]:
    """top_i / bottom_i for repetitions measured next to each other."""
    return [t / b for t, b in zip(top, bottom, strict=True)]


def undying_schema() -> str:
    """undying's whole SQLite schema: every numbered migration, in order."""
    from undying.store.sqlfiles import migrations

    return "\n;\n".join(sql for _, _, sql in migrations("sqlite"))


def bytecode_env(cache_dir: Path) -> dict[str, str]:
    """The environment for a child interpreter that caches bytecode like an installed package.

    This sandbox sets PYTHONDONTWRITEBYTECODE=1, so every child would compile undying from
    source on every start; a pip-installed package has its .pyc files. The cache goes to
    ``cache_dir`` (PYTHONPYCACHEPREFIX), never into the source tree.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(cache_dir)
    return env


def env_line() -> str:
    import platform
    import sqlite3

    load = ", load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    return (
        f"python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs{load}"
    )
