"""A scripted model on loopback, speaking the OpenAI and Anthropic wire formats.

Test an agent offline, with the real client libraries, against a server that answers like the
provider (JSON bodies and server-sent-event streams) from a script::

    script = [call_tools(("search", {"query": "durable agents"})), reply("Here is what I found")]
    async with ScriptedServer(script) as server:
        client = undying.llm.durable(openai.AsyncOpenAI(base_url=server.openai_url, api_key="x"))
        ...
        assert server.requests["chat.completions"] == 2

A script is a list of turns, picked by the request's position in its conversation (how many
assistant turns its history already holds), so a request sent again after a crash gets the
same answer, as it would from a model at temperature 0. A callable ``script(request) -> Turn``
decides anything else. Faults (``server.fail(...)``, ``server.cut(...)``) are queued and
consumed by the next requests, whatever their turn.

Token counts are deterministic: input tokens are the request's messages in characters / 4,
output tokens the reply's words plus 8 per tool call (or the turn's ``usage=``).

Standard library only (asyncio streams); one HTTP/1.1 connection serves many requests.
``start_in_thread()`` runs the server on its own event loop for tests whose workers are other
processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Fault",
    "RecordedRequest",
    "ScriptedServer",
    "ToolCall",
    "Turn",
    "call_tools",
    "reply",
]

CREATED = 1_700_000_000
ENDPOINTS = {
    "/v1/chat/completions": "chat.completions",
    "/v1/responses": "responses",
    "/v1/messages": "messages",
}


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Turn:
    """One assistant turn: text, tool calls, or both."""

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    usage: tuple[int, int] | None = None  # (input, output) tokens instead of the estimate
    chunk: int = 1  # words per streamed text delta
    hold_after: int | None = None  # streamed text deltas sent before waiting for release()


def reply(text: str, **options: Any) -> Turn:
    """A turn that answers with ``text`` (streamed ``chunk`` words per delta)."""
    return Turn(text=text, **options)


def call_tools(*calls: tuple[str, dict[str, Any]], text: str = "", **options: Any) -> Turn:
    """A turn that asks for tool calls (several: parallel calls in one turn)."""
    return Turn(text=text, tool_calls=tuple(ToolCall(n, a) for n, a in calls), **options)


@dataclass(frozen=True, slots=True)
class Fault:
    """What the next matching request gets instead of its turn."""

    endpoint: str | None = None  # None: any
    status: int = 0  # an HTTP error status; 0: a stream cut (or held) after ``after`` events
    headers: tuple[tuple[str, str], ...] = ()
    after: int = 0
    hold: bool = False  # hold the stream after ``after`` text deltas instead of cutting it


@dataclass(slots=True)
class RecordedRequest:
    endpoint: str
    body: dict[str, Any]
    headers: dict[str, str]
    turn_index: int
    answered: str  # "turn", "error <status>", "cut"
    usage: tuple[int, int] | None = None  # (input, output) tokens the answer reports


Script = Sequence[Turn] | Callable[[RecordedRequest], Turn]


@dataclass(slots=True)
class _Ids:
    n: int = 0

    def next(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}_{self.n:04d}"


class ScriptedServer:
    """A loopback HTTP server answering model requests from a script (see module doc)."""

    def __init__(self, script: Script, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.script = script
        self.host = host
        self.port = port
        self.requests: Counter[str] = Counter()
        self.log: list[RecordedRequest] = []
        self._faults: list[Fault] = []
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._release: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ids = _Ids()
        self._lock = threading.Lock()
        self._connections: set[asyncio.StreamWriter] = set()

    # -- urls --------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def openai_url(self) -> str:
        """``base_url`` for ``openai.AsyncOpenAI``."""
        return f"{self.url}/v1"

    @property
    def anthropic_url(self) -> str:
        """``base_url`` for ``anthropic.AsyncAnthropic``."""
        return self.url

    # -- faults and gates -----------------------------------------------------------------
    def fail(
        self,
        status: int,
        *,
        endpoint: str | None = None,
        headers: dict[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """The next ``times`` requests (to ``endpoint``, or any) get HTTP ``status``."""
        with self._lock:
            fault = Fault(endpoint, status, tuple((headers or {}).items()))
            self._faults.extend([fault] * times)

    def cut(self, *, after: int, endpoint: str | None = None, times: int = 1) -> None:
        """The next ``times`` streams are cut (connection dropped) after ``after`` events."""
        with self._lock:
            self._faults.extend([Fault(endpoint, 0, (), after)] * times)

    def hold(self, *, after: int, endpoint: str | None = None) -> None:
        """The next stream stops after ``after`` text deltas until ``release()`` or until the
        client goes away (a worker killed mid-stream, say)."""
        with self._lock:
            self._faults.append(Fault(endpoint, 0, (), after, hold=True))

    def release(self) -> None:
        """Let a stream held by a turn's ``hold_after`` go on (thread-safe)."""
        loop, gate = self._loop, self._release
        if loop is not None and gate is not None:
            loop.call_soon_threadsafe(gate.set)

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> ScriptedServer:
        self._loop = asyncio.get_running_loop()
        self._release = asyncio.Event()
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._connections):
                writer.transport.abort()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def __aenter__(self) -> ScriptedServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start_in_thread(self) -> ScriptedServer:
        """Serve from a thread with its own event loop (until ``stop_thread()``)."""
        ready = threading.Event()
        loop = asyncio.new_event_loop()

        def main() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        self._thread = threading.Thread(target=main, name="scripted-model", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the scripted model server did not start")
        return self

    def stop_thread(self) -> None:
        if self._thread is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None

    # -- HTTP ---------------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                keep = await self._answer(
                    method, path.split("?")[0], headers, body, reader, writer
                )
                if not keep:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client went away, or the server stops
        finally:
            self._connections.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    async def _answer(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        raw: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        endpoint = ENDPOINTS.get(path)
        if method != "POST" or endpoint is None:
            await _send_json(writer, 404, {"error": {"message": f"no {method} {path} here"}})
            return True
        body = json.loads(raw or b"{}")
        request = RecordedRequest(endpoint, body, headers, _turn_index(endpoint, body), "turn")
        with self._lock:
            self.requests[endpoint] += 1
            self.log.append(request)
            streaming = bool(body.get("stream"))
            fault = next(
                (
                    f
                    for f in self._faults
                    if f.endpoint in (None, endpoint) and (f.status or streaming)
                ),
                None,
            )  # a cut or a hold waits for a stream
            if fault is not None:
                self._faults.remove(fault)
        if fault is not None and fault.status:
            request.answered = f"error {fault.status}"
            await _send_json(writer, fault.status, _error_body(endpoint, fault.status),
                             dict(fault.headers))
            return True
        turn = self._turn(request)
        usage = turn.usage or (_input_tokens(endpoint, body), _output_tokens(turn))
        request.usage = usage
        render = _RENDER[endpoint]
        if not body.get("stream"):
            await _send_json(writer, 200, render.whole(body, turn, usage, self._ids))
            return True
        cut_after = fault.after if fault is not None and not fault.hold else None
        hold_after = fault.after if fault is not None and fault.hold else turn.hold_after
        if cut_after is not None:
            request.answered = "cut"
        events = render.events(body, turn, usage, self._ids)
        return await self._stream(reader, writer, events, cut_after, hold_after)

    def _turn(self, request: RecordedRequest) -> Turn:
        if callable(self.script):
            return self.script(request)
        if not self.script:
            return reply("")
        return self.script[min(request.turn_index, len(self.script) - 1)]

    async def _stream(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        events: list[tuple[str | None, Any]],
        cut_after: int | None,
        hold_after: int | None,
    ) -> bool:
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\ncache-control: no-cache\r\n\r\n"
        )
        deltas = 0
        for i, (name, data) in enumerate(events):
            if cut_after is not None and i >= cut_after:
                await writer.drain()
                writer.close()  # the connection ends mid-stream (FIN, so no data sent is lost)
                return False
            text = data if isinstance(data, str) else json.dumps(data)
            frame = (f"event: {name}\n" if name else "") + f"data: {text}\n\n"
            payload = frame.encode()
            writer.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
            await writer.drain()
            if _is_text_delta(data):
                deltas += 1
                held = hold_after is not None and deltas == hold_after
                if held and not await self._held(reader):
                    return False
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True


    async def _held(self, reader: asyncio.StreamReader) -> bool:
        """Wait for ``release()`` (True) or for the client to hang up (False)."""
        assert self._release is not None
        released = asyncio.ensure_future(self._release.wait())
        hangup = asyncio.ensure_future(reader.read(1))  # a client sends nothing mid-stream
        done, pending = await asyncio.wait(
            {released, hangup}, return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if released in done:
            self._release.clear()
            return True
        return False


async def _send_json(
    writer: asyncio.StreamWriter,
    status: int,
    body: Any,
    headers: dict[str, str] | None = None,
) -> None:
    data = json.dumps(body).encode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    writer.write(
        (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(data)}\r\n"
            f"x-request-id: req_scripted\r\n{extra}\r\n"
        ).encode()
        + data
    )
    await writer.drain()


_REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 408: "Timeout",
    409: "Conflict", 422: "Unprocessable", 429: "Too Many Requests", 500: "Server Error",
    503: "Unavailable", 529: "Overloaded",
}


def _error_body(endpoint: str, status: int) -> dict[str, Any]:
    message = f"scripted error {status}"
    if endpoint == "messages":
        return {"type": "error", "error": {"type": "scripted_error", "message": message}}
    return {"error": {"message": message, "type": "scripted_error", "code": str(status)}}


def _is_text_delta(data: Any) -> bool:
    if not isinstance(data, dict):
        return False
    if data.get("type") in ("response.output_text.delta",):
        return True
    delta = data.get("delta")
    if data.get("type") == "content_block_delta":
        return isinstance(delta, dict) and delta.get("type") == "text_delta"
    choices = data.get("choices") or []
    return bool(choices) and bool((choices[0].get("delta") or {}).get("content"))


# -- turns, tokens -------------------------------------------------------------------------
def _turn_index(endpoint: str, body: dict[str, Any]) -> int:
    """How many assistant turns the request's history holds."""
    if endpoint == "responses":
        items = body.get("input")
        if not isinstance(items, list):
            return 0
        turns, previous = 0, ""
        for item in items:
            kind = item.get("type") or ("message" if "role" in item else "")
            is_turn = (kind == "message" and item.get("role") == "assistant") or (
                kind == "function_call"
            )
            if is_turn and previous != "turn":
                turns += 1
            previous = "turn" if is_turn else kind
        return turns
    return sum(1 for m in body.get("messages") or [] if m.get("role") == "assistant")


def _input_tokens(endpoint: str, body: dict[str, Any]) -> int:
    history = body.get("input") if endpoint == "responses" else body.get("messages")
    system = body.get("system") or body.get("instructions") or ""
    return max(1, len(json.dumps([system, history], sort_keys=True)) // 4)


def _output_tokens(turn: Turn) -> int:
    return max(1, len(turn.text.split()) + 8 * len(turn.tool_calls))


def _pieces(turn: Turn) -> list[str]:
    words = turn.text.split(" ")
    step = max(1, turn.chunk)
    parts = [" ".join(words[i : i + step]) for i in range(0, len(words), step)]
    return [p if i == 0 else " " + p for i, p in enumerate(parts)] if turn.text else []


# -- OpenAI chat completions ------------------------------------------------------------
class _Chat:
    @staticmethod
    def whole(body: dict[str, Any], turn: Turn, usage: tuple[int, int], ids: _Ids) -> Any:
        calls = [
            {
                "id": ids.next("call"),
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for c in turn.tool_calls
        ]
        message: dict[str, Any] = {
            "role": "assistant",
            "content": turn.text or None,
            "refusal": None,
        }
        if calls:
            message["tool_calls"] = calls
        return {
            "id": ids.next("chatcmpl"),
            "object": "chat.completion",
            "created": CREATED,
            "model": body.get("model", "scripted"),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "tool_calls" if calls else "stop",
                    "logprobs": None,
                }
            ],
            "usage": _chat_usage(usage),
        }

    @staticmethod
    def events(
        body: dict[str, Any], turn: Turn, usage: tuple[int, int], ids: _Ids
    ) -> list[tuple[str | None, Any]]:
        base = {
            "id": ids.next("chatcmpl"),
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": body.get("model", "scripted"),
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> Any:
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            return {**base, "choices": [choice]}

        out: list[tuple[str | None, Any]] = [(None, chunk({"role": "assistant", "content": ""}))]
        out += [(None, chunk({"content": piece})) for piece in _pieces(turn)]
        for i, c in enumerate(turn.tool_calls):
            call = {
                "index": i,
                "id": ids.next("call"),
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            out.append((None, chunk({"tool_calls": [call]})))
        out.append((None, chunk({}, "tool_calls" if turn.tool_calls else "stop")))
        if (body.get("stream_options") or {}).get("include_usage"):
            out.append((None, {**base, "choices": [], "usage": _chat_usage(usage)}))
        out.append((None, "[DONE]"))
        return out


def _chat_usage(usage: tuple[int, int]) -> dict[str, Any]:
    return {
        "prompt_tokens": usage[0],
        "completion_tokens": usage[1],
        "total_tokens": usage[0] + usage[1],
    }


# -- OpenAI responses -------------------------------------------------------------------
class _Responses:
    @staticmethod
    def _output(turn: Turn, ids: _Ids) -> list[dict[str, Any]]:
        output: list[dict[str, Any]] = []
        if turn.text:
            output.append(
                {
                    "type": "message",
                    "id": ids.next("msg"),
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": turn.text, "annotations": []}],
                }
            )
        for c in turn.tool_calls:
            output.append(
                {
                    "type": "function_call",
                    "id": ids.next("fc"),
                    "call_id": ids.next("call"),
                    "name": c.name,
                    "arguments": json.dumps(c.arguments),
                    "status": "completed",
                }
            )
        return output

    @staticmethod
    def _response(body: dict[str, Any], rid: str, status: str, output: list[Any],
                  usage: tuple[int, int] | None) -> dict[str, Any]:
        return {
            "id": rid,
            "object": "response",
            "created_at": CREATED,
            "status": status,
            "model": body.get("model", "scripted"),
            "output": output,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "metadata": {},
            "temperature": 1.0,
            "top_p": 1.0,
            "text": {"format": {"type": "text"}},
            "usage": None
            if usage is None
            else {
                "input_tokens": usage[0],
                "output_tokens": usage[1],
                "total_tokens": usage[0] + usage[1],
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0},
            },
        }

    @classmethod
    def whole(cls, body: dict[str, Any], turn: Turn, usage: tuple[int, int], ids: _Ids) -> Any:
        return cls._response(body, ids.next("resp"), "completed", cls._output(turn, ids), usage)

    @classmethod
    def events(
        cls, body: dict[str, Any], turn: Turn, usage: tuple[int, int], ids: _Ids
    ) -> list[tuple[str | None, Any]]:
        rid = ids.next("resp")
        output = cls._output(turn, ids)
        seq = iter(range(10_000))
        out: list[tuple[str | None, Any]] = []

        def emit(kind: str, **data: Any) -> None:
            out.append((kind, {"type": kind, "sequence_number": next(seq), **data}))

        emit("response.created", response=cls._response(body, rid, "in_progress", [], None))
        for index, item in enumerate(output):
            if item["type"] == "message":
                emit("response.output_item.added", output_index=index,
                     item={**item, "status": "in_progress", "content": []})
                part = {"type": "output_text", "text": "", "annotations": []}
                emit("response.content_part.added", item_id=item["id"], output_index=index,
                     content_index=0, part=part)
                for piece in _pieces(turn):
                    emit("response.output_text.delta", item_id=item["id"], output_index=index,
                         content_index=0, delta=piece, logprobs=[])
                emit("response.output_text.done", item_id=item["id"], output_index=index,
                     content_index=0, text=turn.text, logprobs=[])
                emit("response.content_part.done", item_id=item["id"], output_index=index,
                     content_index=0, part={**part, "text": turn.text})
            else:
                emit("response.output_item.added", output_index=index,
                     item={**item, "status": "in_progress", "arguments": ""})
                emit("response.function_call_arguments.delta", item_id=item["id"],
                     output_index=index, delta=item["arguments"])
                emit("response.function_call_arguments.done", item_id=item["id"],
                     output_index=index, arguments=item["arguments"], name=item["name"])
            emit("response.output_item.done", output_index=index, item=item)
        emit("response.completed", response=cls._response(body, rid, "completed", output, usage))
        return out


# -- Anthropic messages -----------------------------------------------------------------
class _Messages:
    @staticmethod
    def _content(turn: Turn, ids: _Ids) -> list[dict[str, Any]]:
        content: list[dict[str, Any]] = []
        if turn.text:
            content.append({"type": "text", "text": turn.text})
        for c in turn.tool_calls:
            content.append(
                {"type": "tool_use", "id": ids.next("toolu"), "name": c.name, "input": c.arguments}
            )
        return content

    @staticmethod
    def _usage(usage: tuple[int, int]) -> dict[str, Any]:
        return {
            "input_tokens": usage[0],
            "output_tokens": usage[1],
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }

    @classmethod
    def whole(cls, body: dict[str, Any], turn: Turn, usage: tuple[int, int], ids: _Ids) -> Any:
        return {
            "id": ids.next("msg"),
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "scripted"),
            "content": cls._content(turn, ids),
            "stop_reason": "tool_use" if turn.tool_calls else "end_turn",
            "stop_sequence": None,
            "usage": cls._usage(usage),
        }

    @classmethod
    def events(
        cls, body: dict[str, Any], turn: Turn, usage: tuple[int, int], ids: _Ids
    ) -> list[tuple[str | None, Any]]:
        out: list[tuple[str | None, Any]] = []

        def emit(kind: str, **data: Any) -> None:
            out.append((kind, {"type": kind, **data}))

        message = cls.whole(body, turn, (usage[0], 1), ids)
        emit("message_start", message={**message, "content": [], "stop_reason": None})
        for index, block in enumerate(message["content"]):
            if block["type"] == "text":
                emit("content_block_start", index=index, content_block={"type": "text", "text": ""})
                for piece in _pieces(turn):
                    emit("content_block_delta", index=index,
                         delta={"type": "text_delta", "text": piece})
            else:
                emit("content_block_start", index=index,
                     content_block={**block, "input": {}})
                emit("content_block_delta", index=index,
                     delta={"type": "input_json_delta", "partial_json": json.dumps(block["input"])})
            emit("content_block_stop", index=index)
        emit("message_delta",
             delta={"stop_reason": message["stop_reason"], "stop_sequence": None},
             usage={"output_tokens": usage[1]})
        emit("message_stop")
        return out


_RENDER: dict[str, Any] = {
    "chat.completions": _Chat,
    "responses": _Responses,
    "messages": _Messages,
}
