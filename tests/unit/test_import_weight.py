"""``import undying`` and a worker's first step load only what they use.

Start-up time is part of recovery time: a process that replaces a crashed worker pays for
every module ``import undying`` pulls in before it runs the first step (bench/startup.py
measures it). The optional integrations (pydantic values, PostgreSQL, the web UI, LLM
clients, OpenTelemetry, cron expressions, zstd for large payloads) are imported where they
are used; this test keeps a top-level import from creeping back. Each check runs in a fresh
interpreter, since this test process has imported everything already.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[2] / "src")

#: third-party packages only some applications use
OPTIONAL = (
    "pydantic",
    "psycopg",
    "psycopg_pool",
    "starlette",
    "uvicorn",
    "jinja2",
    "openai",
    "anthropic",
    "opentelemetry",
    "croniter",
    "zstandard",
)
#: undying's own modules for those features (retention is opt-in), and the drivers not in use
OPTIONAL_OWN = (
    "undying.web",
    "undying.llm",
    "undying.otel",
    "undying.cli",
    "undying.demo",
    "undying.testing",
    "undying.retention",
    "undying.store.postgres",
    "undying.store.memory",
)

FIRST_STEP = """
import asyncio, sys
import undying

app = undying.App(sys.argv[1])

@undying.step(name="weight.hello")
async def hello(name: str) -> str:
    return "hello " + name

@app.workflow(name="greet")
async def greet(ctx: undying.Context, name: str) -> str:
    return await hello(name)

async def main() -> None:
    async with app:
        handle = await app.start(greet, "world")
        assert await handle.result() == "hello world"

asyncio.run(main())
"""


def _modules_after(code: str, *args: str) -> set[str]:
    """The names in sys.modules after running ``code`` in a fresh interpreter."""
    script = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    env = {**os.environ, "PYTHONPATH": SRC}
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def _loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


def test_import_undying_loads_no_optional_module() -> None:
    modules = _modules_after("import undying")
    assert _loaded(modules, OPTIONAL) == []
    assert _loaded(modules, OPTIONAL_OWN) == []
    # the SQLite driver is opened by App, not by the import
    assert _loaded(modules, ("sqlite3", "undying.store.sqlite")) == []


def test_first_step_on_sqlite_loads_no_optional_module(tmp_path: Path) -> None:
    modules = _modules_after(FIRST_STEP, str(tmp_path / "app.db"))
    assert "undying.store.sqlite" in modules  # it did run the step on SQLite
    assert _loaded(modules, OPTIONAL) == []
    assert _loaded(modules, OPTIONAL_OWN) == []
    # SQL files are read with open() from the package directory (importlib.resources would
    # import zipfile, tempfile, shutil, bz2 and lzma on the way)
    assert _loaded(modules, ("importlib.resources", "zipfile")) == []
