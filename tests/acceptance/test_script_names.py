"""A workflow started by a script (``python agent.py``) is executed by ``undying worker agent:app``.

In the script the code is module ``__main__``; in the worker it is module ``agent``. Workflow and
step names and the class references in payloads must be the same in both processes.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from undying import App

HERE = Path(__file__).resolve().parent


def test_a_run_started_by_a_script_completes_in_a_worker(tmp_path: Path) -> None:
    db = str(tmp_path / "agent.db")
    env = {**os.environ, "UNDYING_DATABASE_URL": db, "PYTHONUNBUFFERED": "1"}
    started = subprocess.run(
        [sys.executable, str(HERE / "script_agent.py")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == "started script-run as script_agent:checkout"
    worker = subprocess.Popen(
        [sys.executable, "-m", "undying", "worker", "script_agent:app"],
        env=env, cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:

        async def outcome() -> object:
            async with App(db, worker=False) as client:
                return await client.handle("script-run").result(timeout=60)

        assert asyncio.run(outcome()) == "tea x3: 750 cents"
    finally:
        worker.terminate()
        _, err = worker.communicate(timeout=30)
    assert "UnknownWorkflow" not in err and "Traceback" not in err, err


def test_code_with_no_importable_name_must_name_its_workflows(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import undying
        from undying import App, InvalidArgument

        app = App(worker=False)
        try:
            @app.workflow()
            async def agent(ctx):
                return 1
        except InvalidArgument as exc:
            print("refused:", exc)

        @app.workflow(name="agent")
        async def named(ctx):
            return 1

        try:
            @undying.step
            async def tool():
                return 1
        except InvalidArgument as exc:
            print("refused:", exc)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 2 and all("pass name= explicitly" in line for line in lines), lines
