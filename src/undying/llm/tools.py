"""``run_tools``: the model/tool loop, with one journaled step per tool call.

Each turn is one journaled model call; each tool call the model asks for is one step named
``tool.<name>`` with the tool's own policy (retries, timeout, ``at_most_once``; the tool may
pass ``undying.idempotency_key()`` to the outside system). Parallel tool calls in one turn
run concurrently, and take their journal positions in the order the model listed them, so
replay finds each at the same position whatever order they finished in.

A tool that ``requires_approval`` waits durably for the event ``approval:<tool call id>``
(``undying.llm.approve(app, run_id, call_id)``); the run publishes what it waits for in its
status (``{"awaiting_approval": [{"call_id", "tool", "arguments"}]}``), may be released
while it waits, and survives restarts. All approvals of a turn are waited for before any of
its tools run, so the positions do not depend on the order in which humans answer.

A tool's failure (after its retries) goes back to the model as the tool's result, marked as
an error, as agents usually want. An at-most-once tool interrupted mid-call is not run again:
its ``reconcile`` function finds out what happened, or ``StepInDoubt`` is raised, since
nobody should guess. Cancellation is raised.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, overload

from ..errors import EventTimeout, InvalidArgument, StepFailed, StepInDoubt, UndyingError
from ..steps import current_context, step


class EventSender(Protocol):
    """What ``approve`` needs of an ``undying.App`` (a protocol: undying.llm sits below app)."""

    async def send_event(
        self, run_id: str, name: str, payload: Any = None, *, key: str | None = None
    ) -> bool: ...

APPROVAL_PREFIX = "approval:"


class MaxTurnsExceeded(UndyingError):
    """The model was still asking for tools after ``max_turns`` turns."""


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call (make one with ``@undying.llm.tool``)."""

    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., Any]
    stepped: Callable[..., Any]
    requires_approval: bool = False
    approval_timeout: float | None = None
    reconcile: Callable[..., Any] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.stepped(*args, **kwargs)


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...
@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    parameters: dict[str, Any] | None = None,
    retries: int = 0,
    retry_delay: float = 1.0,
    timeout: float | None = None,
    at_most_once: bool = False,
    requires_approval: bool = False,
    approval_timeout: float | None = None,
    reconcile: Callable[..., Any] | None = None,
) -> Callable[[Callable[..., Any]], Tool]: ...
def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    parameters: dict[str, Any] | None = None,
    retries: int = 0,
    retry_delay: float = 1.0,
    timeout: float | None = None,
    at_most_once: bool = False,
    requires_approval: bool = False,
    approval_timeout: float | None = None,
    reconcile: Callable[..., Any] | None = None,
) -> Any:
    """Make a function a tool: its name, docstring and signature describe it to the model
    (or pass ``description`` / ``parameters``, a JSON schema); each call is a step
    ``tool.<name>`` with this policy. ``requires_approval=True``: a human approves each call
    first (see ``approve``); no answer within ``approval_timeout`` seconds is a refusal.
    ``reconcile(idempotency_key, **arguments)``: for an ``at_most_once`` tool interrupted
    mid-call, find out what happened (ask the outside system by the key) and return the
    tool's result; it runs as a step ``tool.<name>.reconcile``. Without it, ``StepInDoubt``
    is raised."""

    def make(func: Callable[..., Any]) -> Tool:
        if not callable(func):
            raise InvalidArgument(f"@undying.llm.tool needs a function, not {func!r}")
        tool_name = str(name or getattr(func, "__name__", ""))
        if not tool_name.replace("_", "").replace("-", "").isalnum():
            raise InvalidArgument(
                f"tool name {tool_name!r}: use letters, digits, '_' and '-' (providers "
                "reject other names); pass name="
            )
        stepped = step(
            name=f"tool.{tool_name}",
            retries=retries,
            retry_delay=retry_delay,
            timeout=timeout,
            at_most_once=at_most_once,
        )(func)
        return Tool(
            tool_name,
            str(description or inspect.getdoc(func) or tool_name),
            parameters if parameters is not None else schema_of(func),
            func,
            stepped,
            requires_approval,
            approval_timeout,
            None
            if reconcile is None
            else step(name=f"tool.{tool_name}.reconcile", retries=retries)(reconcile),
        )

    if fn is not None:
        return make(fn)
    return make


_JSON_TYPES: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    list: "array",
    tuple: "array",
    dict: "object",
}


def schema_of(fn: Callable[..., Any]) -> dict[str, Any]:
    """A JSON schema of ``fn``'s keyword parameters, from its annotations."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        hints = {}
    properties: dict[str, Any] = {}
    required: list[str] = []
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        properties[param.name] = _schema(hints.get(param.name))
        if param.default is param.empty:
            required.append(param.name)
    return {"type": "object", "properties": properties, "required": required}


def _schema(hint: Any) -> dict[str, Any]:
    origin = typing.get_origin(hint) or hint
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _schema(options[0]) if len(options) == 1 else {}
    if origin is typing.Literal:
        return {"enum": list(typing.get_args(hint))}
    kind = _JSON_TYPES.get(origin)
    if kind == "array" and typing.get_args(hint):
        return {"type": "array", "items": _schema(typing.get_args(hint)[0])}
    return {"type": kind} if kind else {}


@dataclass(frozen=True, slots=True)
class ToolRun:
    """What ``run_tools`` returns."""

    response: Any  # the last SDK response: the model's answer
    messages: list[Any] = field(default_factory=list)  # the whole conversation, tools included
    turns: int = 0
    text: str = ""  # the answer's text


async def approve(
    app: EventSender, run_id: str, call_id: str, *, approved: bool = True, reason: str = ""
) -> bool:
    """Answer a tool call waiting for approval (the call id is in the run's status).
    Delivered once: answering the same call again returns False."""
    name = f"{APPROVAL_PREFIX}{call_id}"
    return await app.send_event(
        run_id, name, {"approved": bool(approved), "reason": reason}, key=name
    )


async def run_tools(
    client: Any,
    *,
    tools: Sequence[Tool],
    messages: Sequence[Any],
    max_turns: int = 10,
    **request: Any,
) -> ToolRun:
    """Call the model, run the tools it asks for, give it their results, until it answers
    without a tool call. ``client``: a durable OpenAI (chat completions) or Anthropic
    (messages) client; ``request``: the other arguments of each model call (``model``, and
    for Anthropic ``max_tokens``). Raises ``MaxTurnsExceeded`` after ``max_turns`` turns."""
    from .wrap import durable

    if current_context() is None:
        raise InvalidArgument("run_tools is for workflow code (each call is journaled)")
    if not isinstance(max_turns, int) or max_turns < 1:
        raise InvalidArgument(f"max_turns must be a whole number >= 1, not {max_turns!r}")
    by_name = {t.name: t for t in tools}
    if not all(isinstance(t, Tool) for t in tools) or len(by_name) != len(tools):
        raise InvalidArgument("tools must be distinct @undying.llm.tool functions")
    client = durable(client)
    kind = type(client).__name__
    loop: _Loop = _AnthropicLoop() if kind == "DurableAnthropic" else _OpenAILoop()
    history = list(messages)
    for turn in range(1, max_turns + 1):
        response = await loop.call(client, history, tools, request)
        calls = loop.tool_calls(response)
        history.append(loop.assistant_message(response))
        if not calls:
            return ToolRun(response, history, turn, loop.text(response))
        results = await _run_calls(calls, by_name)
        history.extend(loop.results_messages(results))
    raise MaxTurnsExceeded(
        f"the model still asked for tools after {max_turns} turns; raise max_turns or "
        "tell the model when to stop"
    )


@dataclass(frozen=True, slots=True)
class _Call:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Result:
    call: _Call
    content: str
    is_error: bool


async def _run_calls(calls: list[_Call], by_name: dict[str, Tool]) -> list[_Result]:
    ctx = current_context()
    assert ctx is not None
    verdicts: dict[str, str | None] = {}  # call id -> refusal (None: may run)
    waiting = [c for c in calls if c.name in by_name and by_name[c.name].requires_approval]
    if waiting:
        ctx.set_status(
            {
                "awaiting_approval": [
                    {"call_id": c.id, "tool": c.name, "arguments": c.arguments} for c in waiting
                ]
            }
        )
        answers = await asyncio.gather(
            *(
                ctx.wait_for_event(
                    f"{APPROVAL_PREFIX}{c.id}", timeout=by_name[c.name].approval_timeout
                )
                for c in waiting
            ),
            return_exceptions=True,
        )
        for c, answer in zip(waiting, answers, strict=True):
            verdicts[c.id] = _refusal(answer)
        ctx.set_status({"awaiting_approval": []})
    runs = [
        _run_one(c, by_name.get(c.name))
        if verdicts.get(c.id) is None
        else _refused(c, verdicts[c.id] or "")
        for c in calls
    ]
    return list(await asyncio.gather(*runs))


def _refusal(answer: Any) -> str | None:
    if isinstance(answer, EventTimeout):
        return "no approval arrived in time; the call was not made"
    if isinstance(answer, BaseException):
        raise answer
    if isinstance(answer, dict):
        if answer.get("approved"):
            return None
        return f"a human refused this call: {answer.get('reason') or 'no reason given'}"
    return None if answer is True else "a human refused this call"


async def _refused(call: _Call, why: str) -> _Result:
    return _Result(call, why, True)


async def _run_one(call: _Call, tool: Tool | None) -> _Result:
    if tool is None:
        return _Result(call, f"error: there is no tool named {call.name!r}", True)
    try:
        try:
            value = await tool.stepped(**call.arguments)
        except StepInDoubt as doubt:
            if tool.reconcile is None:
                raise
            value = await tool.reconcile(doubt.idempotency_key, **call.arguments)
    except StepFailed as exc:
        return _Result(call, f"error: {exc.error_type}: {exc.error_message}", True)
    except TypeError as exc:  # the model's arguments do not fit the function
        return _Result(call, f"error: bad arguments: {exc}", True)
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return _Result(call, text, False)


# -- providers ----------------------------------------------------------------------------
class _Loop:
    async def call(self, client: Any, history: list[Any], tools: Sequence[Tool],
                   request: dict[str, Any]) -> Any:
        raise NotImplementedError

    def tool_calls(self, response: Any) -> list[_Call]:
        raise NotImplementedError

    def assistant_message(self, response: Any) -> Any:
        raise NotImplementedError

    def results_messages(self, results: list[_Result]) -> list[Any]:
        raise NotImplementedError

    def text(self, response: Any) -> str:
        raise NotImplementedError


def _arguments(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class _OpenAILoop(_Loop):
    async def call(self, client: Any, history: list[Any], tools: Sequence[Tool],
                   request: dict[str, Any]) -> Any:
        specs = [
            {
                "type": "function",
                "function": {"name": t.name, "description": t.description,
                             "parameters": t.parameters},
            }
            for t in tools
        ]
        return await client.chat.completions.create(messages=history, tools=specs, **request)

    def tool_calls(self, response: Any) -> list[_Call]:
        message = response.choices[0].message
        return [
            _Call(c.id, c.function.name, _arguments(c.function.arguments))
            for c in message.tool_calls or []
            if getattr(c, "type", "function") == "function"
        ]

    def assistant_message(self, response: Any) -> Any:
        message = response.choices[0].message
        out: dict[str, Any] = {"role": "assistant", "content": message.content}
        if message.tool_calls:
            out["tool_calls"] = [c.to_dict() for c in message.tool_calls]
        return out

    def results_messages(self, results: list[_Result]) -> list[Any]:
        return [{"role": "tool", "tool_call_id": r.call.id, "content": r.content} for r in results]

    def text(self, response: Any) -> str:
        return str(response.choices[0].message.content or "")


class _AnthropicLoop(_Loop):
    async def call(self, client: Any, history: list[Any], tools: Sequence[Tool],
                   request: dict[str, Any]) -> Any:
        specs = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters}
            for t in tools
        ]
        return await client.messages.create(messages=history, tools=specs, **request)

    def tool_calls(self, response: Any) -> list[_Call]:
        return [
            _Call(b.id, b.name, _arguments(b.input))
            for b in response.content
            if b.type == "tool_use"
        ]

    def assistant_message(self, response: Any) -> Any:
        return {"role": "assistant", "content": [b.to_dict() for b in response.content]}

    def results_messages(self, results: list[_Result]) -> list[Any]:
        return [
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": r.call.id, "content": r.content,
                     "is_error": r.is_error}
                    for r in results
                ],
            }
        ]

    def text(self, response: Any) -> str:
        return "".join(b.text for b in response.content if b.type == "text")
