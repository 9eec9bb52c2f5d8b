"""Where to cut an encoded value so that each of its parts is stored once (chunk format 2).

A step that returns its whole history, one message longer each turn, encodes to a frame whose
bytes are the previous turn's plus one message, bar a few header bytes that count the
messages. Content-defined chunking (format 1) cuts such a frame every ~4 KiB wherever the
content says, so the chunk holding the newest messages is new every turn and the history's
tail is stored again and again. Cutting at the boundaries of the value's own parts instead
stores each message once, as its own blob, whatever its size or entropy.

:func:`cut` walks the msgpack body of a frame: the value's container (a list, dict, tuple,
dataclass...) is cut between its children. Small consecutive children are grouped into parts of
at least :data:`MIN_PART` bytes; a container child of a few KiB or more is walked into (the
history inside ``{"messages": [...]}``), and a child larger than :data:`MAX_PART` that is one
long string or bytes value is cut by content. The bytes between parts that change every turn
(the frame header, the containers' headers, the CRC at the end) are short and become *gaps*,
kept inline in the reference rather than stored as blobs.

Only the structure is read (headers, and msgpack's C ``skip`` over each child); nothing is
decoded, so no class is looked up and no value is built. Anything that does not parse as
expected gives ``None`` and the caller cuts by content alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

import msgpack

__all__ = ["MAX_PART", "MIN_PART", "Cut", "Segment", "cut"]

MIN_PART: Final = 512
"""Children are grouped until a part has at least this many bytes (fewer blobs, fewer keys)."""
MAX_PART: Final = 16 * 1024
"""No part is larger (a stored chunk is decompressed into at most this much)."""

_GAP: Final = 64  # a range shorter than this stays inline, as a gap
# A container child larger than this is cut between its own children (a history inside a dict
# is cut per message before it outgrows MAX_PART), while inline gaps have room to spare.
_WALK: Final = 4 * MIN_PART
_MAX_GAPS: Final = 1024  # total inline bytes; past this the value is cut by content instead
_MAX_DEPTH: Final = 32  # containers walked into, one inside the other
_FRAME_TAIL: Final = 4  # the codec frame's CRC
_PLAIN_HEADERS: Final = frozenset((0x01, 0x03))  # codec frames whose body is not compressed

Segment = tuple[int, int, bool]
"""``(start, end, is_part)``: a byte range of the frame, stored as a part or inline as a gap."""


@dataclass(slots=True)
class Cut:
    """The segments of a frame, and where a cut of a longer frame may resume from them.

    ``mark`` is the last end of a child of the outermost container at which a segment ends:
    a frame whose bytes from ``first`` (its first child) to ``mark`` are the same cuts into the
    same first ``mark_segments`` segments, so only its children after ``mark_children`` need
    walking (a history that grew by one message costs one message, not the whole history).
    """

    segments: list[Segment]
    first: int
    mark: int = 0
    mark_segments: int = 0
    mark_children: int = 0
    mark_gaps: int = 0
    reused: int = 0  # leading segments taken from the previous cut


def _container(data: bytes, pos: int) -> tuple[int, int] | None:
    """``(children, header length)`` of the msgpack array or map at ``pos``, else None."""
    b = data[pos]
    if 0x90 <= b <= 0x9F:
        return b & 0x0F, 1
    if 0x80 <= b <= 0x8F:
        return 2 * (b & 0x0F), 1
    if b in (0xDC, 0xDE):
        size, width = int.from_bytes(data[pos + 1 : pos + 3], "big"), 3
    elif b in (0xDD, 0xDF):
        size, width = int.from_bytes(data[pos + 1 : pos + 5], "big"), 5
    else:
        return None
    return (2 * size if b in (0xDE, 0xDF) else size), width


class _Cutter:
    def __init__(self, data: bytes, by_content: Callable[[memoryview], Iterable[int]]) -> None:
        self.data = data
        self.by_content = by_content
        self.segments: list[Segment] = []
        self.pending = 0  # start of the range not yet given to a segment
        self.gaps = 0

    def flush(self, at: int, part: bool | None = None) -> None:
        """End the pending range at ``at``: a part, or a gap when short (unless ``part``)."""
        if at <= self.pending:
            return
        is_part = (at - self.pending >= _GAP) if part is None else part
        if not is_part:
            self.gaps += at - self.pending
            if self.gaps > _MAX_GAPS:
                raise _Unsuitable
        self.segments.append((self.pending, at, is_part))
        self.pending = at

    def walk(self, start: int, end: int, depth: int, done: int = 0, top: Cut | None = None) -> None:
        """Cut the container ``data[start:end]`` between its children, from child ``done`` on
        (``pending`` is where that child starts). ``top`` records the outermost's marks."""
        shape = _container(self.data, start)
        if shape is None or depth > _MAX_DEPTH or done > shape[0]:
            raise _Unsuitable
        count, width = shape
        if not done:
            self.flush(start + width, part=False)  # the header: it counts the children
        first = self.pending
        unpacker = msgpack.Unpacker(max_buffer_size=max(end - first, 1))
        unpacker.feed(memoryview(self.data)[first:end])
        child_start = first
        for index in range(done, count):
            unpacker.skip()
            child_end = first + unpacker.tell()
            size = child_end - child_start
            nested = size > _WALK and _container(self.data, child_start) is not None
            if size > MAX_PART or (nested and self.gaps < _MAX_GAPS // 2):
                self.flush(child_start)
                if nested:
                    self.walk(child_start, child_end, depth + 1)
                else:
                    view = memoryview(self.data)[child_start:child_end]
                    for length in self.by_content(view):
                        self.flush(self.pending + length, part=True)
                self.flush(child_end)  # a part never straddles the end of a big child
            else:
                if child_end - self.pending > MAX_PART:
                    self.flush(child_start)
                if child_end - self.pending >= MIN_PART:
                    self.flush(child_end, part=True)
            if top is not None and self.pending == child_end:
                top.mark, top.mark_segments = child_end, len(self.segments)
                top.mark_children, top.mark_gaps = index + 1, self.gaps
            child_start = child_end
        if child_start != end:
            raise _Unsuitable


class _Unsuitable(Exception):
    """The frame is not a plain container that parses as expected."""


def cut(
    data: bytes,
    by_content: Callable[[memoryview], Iterable[int]],
    previous: tuple[bytes, Cut] | None = None,
) -> Cut | None:
    """The segments of the codec frame ``data`` (covering it, in order), or None when it does not
    hold a plain container. ``by_content`` gives the lengths a long string is cut into.

    ``previous`` is an earlier frame and its cut: when ``data`` starts with the same children,
    their segments are taken from it instead of being walked again.
    """
    body_end = len(data) - _FRAME_TAIL
    if body_end < 2 or data[0] not in _PLAIN_HEADERS:
        return None
    cutter = _Cutter(data, by_content)
    try:
        shape = _container(data, 1)
        if shape is None:
            return None
        result = Cut([], 1 + shape[1])
        done = _resume(cutter, result, data, body_end, previous)
        cutter.walk(1, body_end, 0, done, result)
        if len(data) - cutter.pending > MAX_PART:
            cutter.flush(body_end)
        cutter.flush(len(data))
    except (_Unsuitable, ValueError, msgpack.UnpackException):
        return None  # msgpack refuses malformed input with ValueError or UnpackException
    result.segments = cutter.segments
    return result


def _resume(
    cutter: _Cutter, result: Cut, data: bytes, body_end: int, previous: tuple[bytes, Cut] | None
) -> int:
    """Seed ``cutter`` with the segments ``previous`` shares with ``data``: the number of the
    outermost container's children they cover (0 when nothing is shared)."""
    if previous is None:
        return 0
    old_data, old = previous
    shift = result.first - old.first
    mark = old.mark + shift
    if not old.mark or old_data[0] != data[0] or mark > body_end:
        return 0
    if not data.startswith(old_data[old.first : old.mark], result.first):
        return 0
    count = _container(data, 1)
    if count is None or count[0] < old.mark_children:
        return 0
    head = (0, result.first, False)  # this frame's own header (its count differs)
    kept = old.segments[1 : old.mark_segments]
    if shift:
        kept = [(start + shift, end + shift, part) for start, end, part in kept]
    cutter.segments = [head, *kept]
    cutter.gaps = old.mark_gaps + shift
    cutter.pending = mark
    result.mark, result.mark_segments = mark, old.mark_segments
    result.mark_children, result.mark_gaps = old.mark_children, cutter.gaps
    result.reused = old.mark_segments
    return old.mark_children
