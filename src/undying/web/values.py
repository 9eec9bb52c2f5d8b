"""Stored values as an operator reads them: loaded, decoded, and shown as indented JSON.

A journal payload may be inline, deferred (large: not loaded with the journal's metadata) or
offloaded (a reference to content-defined chunks). ``load_entry_value`` fetches and joins it
through the read side alone, then decodes it with the app's codec. Values JSON cannot hold
(dataclasses, datetimes, bytes, sets...) are turned into JSON-like trees that say what they
were, so a page shows every value the same way.

A payload the codec refuses (a class this process does not know, a pickle, a newer format) is
not hidden: the page says why, and shows the raw msgpack structure when the frame is one this
module can open without interpreting it. The UI never unpickles and never imports a module a
payload names beyond what the codec itself does.

Everything here produces text or ``Markup`` built from escaped pieces: no stored string ever
reaches the page unescaped.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import json
import math
import re
import uuid
from dataclasses import dataclass
from typing import Any

import msgpack
from markupsafe import Markup, escape

from ..codec import Codec, zstd_decompress
from ..errors import UndyingError
from ..payloads import is_ref, resolve
from ..store.base import Entry, ReadSide

#: characters of a value shown in the page; the rest is one click away (the raw download)
MAX_SHOWN = 200_000
#: nesting shown before a branch is cut (a value is never walked deeper than this)
MAX_DEPTH = 60
#: bytes shown of a bytes value
BYTES_PREVIEW = 64
#: the largest body the raw fallback decompresses (frames are at most 16 KiB compressed)
_RAW_LIMIT = 64 << 20
_PLAIN_HEADERS = (0x01, 0x03)
_ZSTD_HEADERS = (0x02, 0x04)


@dataclass(slots=True)
class Shown:
    """A value ready for the page."""

    text: str = ""  # the value as indented JSON (or plain text for a string)
    is_text: bool = False  # a string value, shown as it is rather than as a JSON string
    truncated: bool = False
    stored_bytes: int = 0  # size of the stored frame (after joining chunks)
    offloaded: bool = False  # the payload was stored as chunks
    error: str | None = None  # why it could not be decoded (then ``text`` is the raw view)
    missing: bool = False  # the entry has no payload at all

    @property
    def markup(self) -> Markup:
        return escape(self.text) if self.is_text else highlight_json(self.text)


def displayable(value: Any, depth: int = 0) -> Any:
    """A JSON-compatible tree standing for ``value``; types JSON lacks say what they were."""
    if depth > MAX_DEPTH:
        return "… (nested too deep to show)"
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if not isinstance(value, enum.Enum) else _enum(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, enum.Enum):
        return _enum(value)
    if isinstance(value, dict):
        return {_key(k): displayable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [displayable(v, depth + 1) for v in value]
    if isinstance(value, msgpack.ExtType):  # the raw view: an extension the codec would decode
        return {f"<msgpack extension {value.code}>": _ext_content(value.data, depth)}
    if isinstance(value, tuple) and hasattr(value, "_asdict"):  # a named tuple
        return _typed(value, value._asdict(), depth)
    if isinstance(value, tuple):
        return [displayable(v, depth + 1) for v in value]
    if isinstance(value, set | frozenset):
        return [displayable(v, depth + 1) for v in sorted(value, key=repr)]
    if isinstance(value, bytes | bytearray | memoryview):
        return _bytes(bytes(value))
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return f"timedelta({value})"
    if isinstance(value, uuid.UUID | decimal.Decimal):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name, None) for f in dataclasses.fields(value)}
        return _typed(value, fields, depth)
    dump = getattr(value, "model_dump", None)  # a pydantic model
    if callable(dump):
        try:
            return _typed(value, dump(mode="python"), depth)
        except Exception:
            pass
    if isinstance(value, BaseException):
        return _typed(value, {"args": list(value.args)}, depth)
    return repr(value)


def _typed(value: Any, fields: dict[str, Any], depth: int) -> dict[str, Any]:
    cls = type(value)
    shown: dict[str, Any] = {"__type__": f"{cls.__module__}.{cls.__qualname__}"}
    for name, field in fields.items():
        shown[_key(name)] = displayable(field, depth + 1)
    return shown


def _ext_content(data: bytes, depth: int) -> Any:
    """What an extension holds, as msgpack when it is (a class name and its fields, say)."""
    try:
        inner = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception:
        return _bytes(data)
    return displayable(inner, depth + 1)


def _enum(value: enum.Enum) -> str:
    return f"{type(value).__qualname__}.{value.name}"


def _key(key: Any) -> str:
    return key if isinstance(key, str) else repr(key)


def _bytes(data: bytes) -> str:
    head = data[:BYTES_PREVIEW].hex(" ")
    more = " …" if len(data) > BYTES_PREVIEW else ""
    return f"<{len(data)} bytes: {head}{more}>"


def show_value(value: Any, limit: int | None = MAX_SHOWN) -> Shown:
    """A decoded value as page text: a string as itself, anything else as indented JSON,
    cut after ``limit`` characters (None: whole, for downloads)."""
    if isinstance(value, str):
        text, is_text = value, True
    else:
        text = json.dumps(displayable(value), indent=2, ensure_ascii=False)
        is_text = False
    shown = Shown(text=text, is_text=is_text)
    if limit is not None and len(text) > limit:
        shown.text, shown.truncated = text[:limit], True
    return shown


def show_frame(codec: Codec, frame: bytes | None, limit: int | None = MAX_SHOWN) -> Shown:
    """Decode a stored frame for the page; an undecodable one says why and shows its raw
    structure where possible."""
    if frame is None:
        return Shown(missing=True)
    try:
        value = codec.decode(frame)
    except UndyingError as exc:
        shown = _raw_view(frame, limit)
        shown.error = str(exc)
    else:
        shown = show_value(value, limit)
    shown.stored_bytes = len(frame)
    return shown


def _raw_view(frame: bytes, limit: int | None) -> Shown:
    """The msgpack structure of a frame, extensions left opaque (no class is looked up)."""
    header, body = frame[0] if frame else None, frame[1:-4]
    try:
        if header in _ZSTD_HEADERS:
            body = zstd_decompress(body, _RAW_LIMIT)
        elif header not in _PLAIN_HEADERS:
            return Shown()
        value = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception:
        return Shown()
    return show_value(value, limit)


async def load_entry_value(
    reads: ReadSide, codec: Codec, run_id: str, entry: Entry, limit: int | None = MAX_SHOWN
) -> tuple[Shown, bytes | None]:
    """The entry's payload for the page, fetched (deferred) and joined (offloaded) through
    the read side. Also returns the frame, for the raw download."""
    payload = entry.payload
    if entry.deferred:
        payload = (await reads.load_payloads(run_id, [entry.seq])).get(entry.seq)
    if payload is None:
        return Shown(missing=True), None
    offloaded = is_ref(payload)
    try:
        frame = await resolve(reads, payload)
    except UndyingError as exc:
        return Shown(error=f"the payload's chunks cannot be read: {exc}", offloaded=True), None
    shown = show_frame(codec, frame, limit)
    shown.offloaded = offloaded
    return shown, frame


# -- highlighting ------------------------------------------------------------------------------
_JSON_TOKEN = re.compile(
    r'(?P<key>"(?:[^"\\\n]|\\.)*"(?=\s*:))'
    r'|(?P<str>"(?:[^"\\\n]|\\.)*")'
    r"|(?P<num>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)"
    r"|(?P<lit>\b(?:true|false|null)\b)"
)


def highlight_json(text: str) -> Markup:
    """JSON text with keys, strings, numbers and literals in spans; every piece escaped."""
    out: list[str] = []
    last = 0
    for match in _JSON_TOKEN.finditer(text):
        out.append(escape(text[last : match.start()]))
        kind = match.lastgroup
        out.append(Markup('<span class="j-{}">{}</span>').format(kind, match.group()))
        last = match.end()
    out.append(escape(text[last:]))
    return Markup("").join(out)
