"""The timeline's estimate of executions and replay, and how values are shown."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import zlib
from typing import Any

import msgpack

from undying.codec import Codec
from undying.store.base import ARMED, ERROR, OK, Entry
from undying.web.timeline import MIN_BAR_WIDTH, build_timeline, human_duration
from undying.web.values import displayable, highlight_json, show_frame, show_value


def entry(seq: int, start: float, end: float | None, status: str = OK, **fields: Any) -> Entry:
    kind = str(fields.pop("kind", "step"))
    return Entry(seq, kind, f"s{seq}", status, None, None, 1, start, end, **fields)


def test_a_run_claimed_once_replayed_nothing() -> None:
    entries = [entry(0, 0.0, 1.0), entry(1, 60.0, 61.0), entry(2, 61.0, 62.0)]
    timeline = build_timeline(entries, claims=1, now=100.0)
    assert timeline.executions == 1 and timeline.pauses == []
    assert [bar.replayed for bar in timeline.bars] == [False, False, False]
    assert timeline.bars[1].left > timeline.bars[0].left  # one linear scale: the pause shows


def test_the_longest_pauses_start_the_later_executions() -> None:
    entries = [
        entry(0, 0.0, 1.0),
        entry(1, 1.0, 1.2),  # a short gap: workflow code between calls
        entry(2, 3601.2, 3602.0, kind="event"),  # an hour waiting for an event
        entry(3, 3602.0, 3603.0),
        entry(4, 3700.0, 3701.0),  # 97 s: a crash and a take-over
        entry(5, 3701.0, 3702.0),
    ]
    timeline = build_timeline(entries, claims=3, now=4000.0)
    assert timeline.executions == 3
    assert [bar.execution for bar in timeline.bars] == [1, 1, 2, 2, 3, 3]
    assert [bar.replayed for bar in timeline.bars] == [True] * 4 + [False] * 2
    assert [(p.before_seq, round(p.seconds)) for p in timeline.pauses] == [(2, 3600), (4, 97)]
    lefts = [bar.left for bar in timeline.bars]
    assert lefts == sorted(lefts) and all(0 <= x <= 100 for x in lefts)
    assert timeline.pauses[0].left < timeline.bars[2].left  # the break sits before entry 2
    assert timeline.bars[1].left - timeline.bars[0].left < 50  # the hour does not squash


def test_claims_that_recorded_nothing_leave_fewer_executions() -> None:
    entries = [entry(0, 0.0, 1.0), entry(1, 1.001, 2.0), entry(2, 30.0, 31.0)]
    timeline = build_timeline(entries, claims=5, now=40.0)
    assert timeline.executions == 2  # one pause over MIN_PAUSE: one new execution shows
    assert [bar.replayed for bar in timeline.bars] == [True, True, False]


def test_an_open_wait_runs_to_the_edge_without_stretching_the_scale() -> None:
    entries = [entry(0, 0.0, 1.0), entry(1, 1.0, 2.0), entry(2, 2.0, None, ARMED, kind="event")]
    timeline = build_timeline(entries, claims=1, now=90_000.0)
    _, second, wait = timeline.bars
    assert wait.open and not wait.replayed
    assert second.width > 20  # a day of waiting does not shrink the steps to slivers
    assert abs(wait.left + wait.width - 100) < 1e-6
    failed = build_timeline([entry(0, 0.0, 0.0, ERROR)], claims=1, now=1.0).bars[0]
    assert failed.category == "error" and failed.width >= MIN_BAR_WIDTH


def test_durations_read_like_a_person_writes_them() -> None:
    assert [human_duration(s) for s in (0.4123, 3.21, 125, 3720, 2 * 86400 + 3 * 3600)] == [
        "412 ms",
        "3.2 s",
        "2 m 05 s",
        "1 h 02 m",
        "2 d 3 h",
    ]


@dataclasses.dataclass
class Reply:
    text: str
    at: dt.datetime
    raw: bytes


def test_values_json_cannot_hold_are_shown_for_what_they_are() -> None:
    value = {
        "reply": Reply("hi", dt.datetime(2024, 1, 2, tzinfo=dt.UTC), b"\x00\x01"),
        "tags": {"b", "a"},
        1: (2, 3),
    }
    shown = json.loads(show_value(value).text)
    assert shown == {
        "reply": {
            "__type__": f"{__name__}.Reply",
            "text": "hi",
            "at": "2024-01-02T00:00:00+00:00",
            "raw": "<2 bytes: 00 01>",
        },
        "tags": ["a", "b"],
        "1": [2, 3],
    }
    text = show_value("a long\nanswer")
    assert text.is_text and text.text == "a long\nanswer"
    assert show_value("x" * 10, limit=4).truncated


def test_an_undecodable_payload_says_why_and_shows_its_raw_structure() -> None:
    codec = Codec()
    body = msgpack.packb(["x", msgpack.ExtType(99, msgpack.packb(["some.module", "Cls"]))])
    frame = b"\x01" + body + zlib.crc32(body, zlib.crc32(b"\x01")).to_bytes(4, "little")
    shown = show_frame(codec, frame)
    assert shown.error is not None and "kind 99" in shown.error
    assert json.loads(shown.text) == ["x", {"<msgpack extension 99>": ["some.module", "Cls"]}]
    corrupt = show_frame(codec, b"\x01garbage!")
    assert corrupt.error and corrupt.text == ""


def test_highlighting_escapes_every_piece() -> None:
    html = str(highlight_json(json.dumps({"<b>": "</pre><script>x()</script>", "n": 1})))
    assert "<script>" not in html and "</pre>" not in html
    assert '<span class="j-key">&#34;&lt;b&gt;&#34;</span>' in html
    assert '<span class="j-num">1</span>' in html
    assert displayable(float("nan")) == "nan"
