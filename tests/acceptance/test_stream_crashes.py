"""A stream read from another process while its writer is SIGKILLed again and again.

``stream_agent.py write`` publishes a value between every two steps of its workflow and is
killed, for real, at random points: by itself inside a step or right after a publish (points
drawn from a seeded random generator), and by this test at a moment of its own choosing (as
soon as the reader has seen a random number of values, wherever the writer is then). A new
writer process recovers the run each time. Meanwhile ``stream_agent.py read``, another
process, follows the stream; it is killed too, once, and restarted from the offset it had
reached. What it collected must equal what a reader of an uncrashed run collects: every
value exactly once, in order. On SQLite (one file shared by the processes) and PostgreSQL.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pg_helpers import fresh_database, poll_until

AGENT = Path(__file__).with_name("stream_agent.py")
COUNT = 40


@contextlib.contextmanager
def database(backend: str, tmp: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield str(tmp / "journal.db")
    else:
        with fresh_database() as url:
            yield url


class Processes:
    """The writer and reader processes of one scenario, with their output."""

    def __init__(self, db: str, tmp: Path) -> None:
        self.db = db
        self.tmp = tmp
        self.out = tmp / "read.jsonl"
        self.markers = tmp / "markers"
        self.markers.mkdir(parents=True, exist_ok=True)
        self.kills = 0

    def writer(self, kills: str) -> subprocess.Popen[str]:
        args = ["write", self.db, str(self.markers), str(COUNT), kills]
        return self._start(args)

    def reader(self, offset: int) -> subprocess.Popen[str]:
        return self._start(["read", self.db, str(offset), str(self.out)])

    def _start(self, args: list[str]) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(AGENT), *args],
            cwd=AGENT.parent,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def lines(self) -> list[str]:
        if not self.out.exists():
            return []
        return self.out.read_text().splitlines()

    def seen(self) -> list[Any]:
        return [json.loads(line) for line in self.lines()]


def finish(proc: subprocess.Popen[str], *, killed: bool) -> str:
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    detail = f"rc={proc.returncode}\nstdout:\n{out}\nstderr:\n{err}"
    expected = -signal.SIGKILL if killed else 0
    assert proc.returncode == expected, detail
    return out


def uncrashed(backend: str, tmp: Path) -> list[Any]:
    with database(backend, tmp) as db:
        procs = Processes(db, tmp)
        reader = procs.reader(0)
        writer = procs.writer("none")
        assert "result 40" in finish(writer, killed=False)
        finish(reader, killed=False)
        return procs.seen()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_reader_elsewhere_sees_every_value_once_in_order_across_writer_kills(
    tmp_path: Path, backend: str
) -> None:
    reference = uncrashed(backend, tmp_path / "reference")
    assert reference == [{"i": i, "square": i * i} for i in range(COUNT)]

    seed = random.randrange(1 << 30)
    rnd = random.Random(seed)
    points = [rnd.randrange(2, 10), rnd.randrange(14, 24), rnd.randrange(28, 36)]
    kills = ",".join(f"{rnd.choice(['step', 'publish'])}:{i}" for i in points)
    # The reader is killed once it has seen `reader_at` values (all published before the
    # first self-kill) and restarted from there; this test kills a writer itself as soon
    # as the reader has seen `outside` values, wherever that writer is then (in a step, in
    # a commit, recovering the run).
    reader_at = rnd.randrange(1, points[0] + 1)
    outside = rnd.randrange(points[0] + 2, COUNT - 2)
    context = f"seed {seed}: self-kills at {kills}, reader at {reader_at}, outside at {outside}"
    with database(backend, tmp_path / "crashed") as db:
        procs = Processes(db, tmp_path / "crashed")
        reader = procs.reader(0)
        killed_outside = reader_restarted = False
        writers = 0
        while True:
            writer = procs.writer(kills)
            writers += 1
            assert writers <= 10, f"the writer never finished ({context})"
            if not reader_restarted:
                poll_until(lambda: len(procs.lines()) >= reader_at, 60, f"the reader ({context})")
                reader.send_signal(signal.SIGKILL)
                finish(reader, killed=True)
                reader = procs.reader(len(procs.lines()))
                reader_restarted = True
            if not killed_outside:
                poll_until(
                    lambda w=writer: len(procs.lines()) >= outside or w.poll() is not None,
                    60,
                    f"the reader to see {outside} values ({context})",
                )
                if writer.poll() is None:
                    writer.send_signal(signal.SIGKILL)
                    killed_outside = True
            out, err = writer.communicate(timeout=120)
            if writer.returncode == 0:
                assert "result 40" in out, out
                break
            assert writer.returncode == -signal.SIGKILL, f"{context}\n{out}\n{err}"
        finish(reader, killed=False)
        seen = procs.seen()
    print(context, f"- {writers} writers, killed by the test: {killed_outside}")
    assert writers >= 4, context  # three self-kills at least, then the one that finished
    assert seen == reference, context
