"""Recorded errors are rebuilt as ordinary exceptions, the same on the first run and on replay."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from typing import Any

import pytest

import undying
from undying import Context, StepFailed, WorkflowFailed
from undying.codec import Codec
from undying.failures import describe_error, rebuild_error, step_failure
from undying.testing import replay_check, temp_app

codec = Codec()


class Response:
    """Stands for an SDK's live HTTP response: not something a journal can hold."""

    status_code = 429


class ProviderError(Exception):
    """Shaped like openai.APIStatusError: keyword-only arguments, attributes set in __init__."""

    def __init__(self, message: str, *, response: Response, body: dict[str, Any]) -> None:
        super().__init__(message)
        self.response = response
        self.body = body
        self.status_code = response.status_code
        self.request_id = "req-1"


def cause_facts(exc: BaseException | None) -> dict[str, Any]:
    assert exc is not None
    return {
        "type": type(exc),
        "args": exc.args,
        "attrs": {k: v for k, v in vars(exc).items() if k != "__notes__"},
        "notes": getattr(exc, "__notes__", []),
    }


def test_a_step_error_is_the_same_on_the_first_run_and_on_replay(db_path: str) -> None:
    seen: list[dict[str, Any]] = []

    @undying.step
    async def call_provider() -> str:
        raise ProviderError("rate limited", response=Response(), body={"error": "slow down"})

    def make_app() -> undying.App:
        app = temp_app(db_path)

        @app.workflow(name="agent")
        async def agent(ctx: Context) -> str:
            try:
                await call_provider()
            except StepFailed as exc:
                seen.append(cause_facts(exc.__cause__))
                return "handled"
            return "no error"

        return app

    async def first() -> Any:
        async with make_app() as app:
            return await (await app.start("agent", run_id="e1")).result(timeout=30)

    assert asyncio.run(first()) == "handled"

    async def replay() -> Any:  # a new App on the same file: nothing live is left
        async with make_app() as app:
            return await replay_check(app)

    assert asyncio.run(replay()) == []
    assert len(seen) == 2
    first_run, replayed = seen
    assert first_run == replayed
    assert first_run["type"] is ProviderError
    assert first_run["args"] == ("rate limited",)
    assert first_run["attrs"] == {
        "body": {"error": "slow down"},
        "status_code": 429,
        "request_id": "req-1",
    }  # the live response is not journaled, so neither run has it
    assert "ProviderError: rate limited" in first_run["notes"][-1]  # the recorded traceback


def test_a_recorded_system_exit_is_never_raised(db_path: str) -> None:
    app = temp_app(db_path)

    @app.workflow(name="doomed")
    async def doomed(ctx: Context) -> None:
        raise ValueError("replaced below")

    async def main() -> BaseException:
        async with app:
            handle = await app.start("doomed", run_id="r1")
            with pytest.raises(ValueError):
                await handle.result(timeout=30)
            planted = codec.encode(
                {"type": "builtins:SystemExit", "message": "3", "args": [3], "traceback": ""}
            )
            with sqlite3.connect(db_path) as db:  # whoever can write to the database
                db.execute("UPDATE runs SET error = ? WHERE run_id = 'r1'", (planted,))
            try:
                await app.handle("r1").result(timeout=30)
            except BaseException as exc:  # SystemExit is what must not come out
                return exc
            raise AssertionError("no error")

    error = asyncio.run(main())
    assert type(error) is WorkflowFailed
    assert error.error_type == "builtins.SystemExit"


@pytest.mark.parametrize(
    "type_path",
    [
        "builtins:SystemExit",
        "builtins:KeyboardInterrupt",
        "builtins:GeneratorExit",
        "asyncio.exceptions:CancelledError",
        "builtins:BaseException",
    ],
)
def test_only_ordinary_exceptions_are_rebuilt(type_path: str) -> None:
    info = {"type": type_path, "message": "m", "args": ["m"], "state": {}}
    assert type(rebuild_error(info)) is WorkflowFailed
    as_is = step_failure({**info, "as_is": True}, "s")
    assert type(as_is) is WorkflowFailed
    failed = step_failure(info, "s")
    assert type(failed) is StepFailed and failed.__cause__ is None


def test_a_recorded_error_naming_an_unimported_module_does_not_import_it() -> None:
    code = """
import sys
from undying.failures import rebuild_error
error = rebuild_error({"type": "this:Boom", "message": "m", "args": ["m"], "state": {}})
print(type(error).__name__, error.error_type, "this" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "WorkflowFailed this.Boom False\n"  # `import this` prints a poem


def test_builtin_and_undying_errors_are_rebuilt() -> None:
    error = rebuild_error(codec.decode(describe_error(KeyError("k"), codec)))
    assert type(error) is KeyError and error.args == ("k",)
    oserror = rebuild_error(codec.decode(describe_error(FileNotFoundError(2, "gone"), codec)))
    assert type(oserror) is FileNotFoundError and oserror.errno == 2
    serialization = undying.SerializationError("bad", path="value[0]")
    rebuilt = rebuild_error(codec.decode(describe_error(serialization, codec)))
    assert type(rebuilt) is undying.SerializationError and rebuilt.path == "value[0]"


def test_an_error_recorded_before_its_state_was_is_rebuilt_by_calling_its_class() -> None:
    info = {"type": "builtins:ValueError", "message": "old", "args": ["old"]}  # no "state"
    error = rebuild_error(info)
    assert type(error) is ValueError and error.args == ("old",)


def test_unencodable_attributes_are_left_out() -> None:
    error = ProviderError("x", response=Response(), body={"a": object()})
    info = codec.decode(describe_error(error, codec))
    assert set(info["state"]) == {"status_code", "request_id"}
