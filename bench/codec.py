"""Cost of Codec.encode and Codec.decode for the values steps typically return (diagnostic).

Microseconds per call: the best of ``--reps`` timeit runs (for a CPU-bound call of a few
microseconds the minimum is what the code costs; the rest is other processes). ``--against DIR``
also loads ``DIR/src/undying/codec.py`` (another checkout, e.g. ``git worktree add /tmp/base
main``) as a separate module and times both in the same process, alternating, so the columns
are comparable on a busy machine.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.util
import os
import sys
import timeit
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as common
import pydantic

from undying.codec import Codec


@dataclasses.dataclass
class Message:
    role: str
    content: str
    tokens: int


class Reply(pydantic.BaseModel):
    id: str
    model: str
    text: str
    finish_reason: str
    created: dt.datetime
    usage: dict[str, int]


def values() -> dict[str, Any]:
    kilobyte = {f"key{i}": f"value number {i} " * 3 for i in range(20)}
    return {
        "None": None,
        "small dict": {"i": 7, "ok": True, "label": "step 7"},
        "1 KB dict": kilobyte,
        "dataclass": Message("assistant", "hello there", 3),
        "pydantic model": Reply(
            id="r-1",
            model="m",
            text="some text",
            finish_reason="stop",
            created=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
            usage={"in": 10, "out": 20},
        ),
        "100 dataclasses": [Message("user", f"message {i}", i) for i in range(100)],
        "tuple of 10": tuple(range(10)),
        "history 2000 dicts": [
            {"role": "user", "content": f"message {i} " * 10, "n": i} for i in range(2000)
        ],
    }


def _load_other(checkout: str) -> Any:
    path = Path(checkout) / "src" / "undying" / "codec.py"
    spec = importlib.util.spec_from_file_location("undying_other_codec", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.Codec()


def _once(fn: Any, number: int) -> float:
    return timeit.timeit(fn, number=number) / number * 1e6


def main() -> None:
    p = common.parser(__doc__ or "")
    p.add_argument("--against", default=None, help="another checkout to compare with")
    args = p.parse_args()
    reps = args.reps or (5 if args.quick else 15)
    codecs = {"this": Codec()}
    if args.against:
        codecs = {"other": _load_other(args.against), **codecs}
    print(f"load average {os.getloadavg()[0]:.2f}; best of {reps} repetitions, us per call")
    head = "".join(f" {'enc ' + n:>10} {'dec ' + n:>10}" for n in codecs)
    print(f"{'value':<20} {'bytes':>7}{head}")
    for label, value in values().items():
        frames = {name: codec.encode(value) for name, codec in codecs.items()}
        size = len(frames["this"])
        number = max(1, 20000 // max(1, size // 64))
        calls = []
        for name, codec in codecs.items():
            data = frames[name]
            calls.append(lambda c=codec, v=value: c.encode(v))
            calls.append(lambda c=codec, d=data: c.decode(d))
        times: list[list[float]] = [[] for _ in calls]
        for _ in range(reps):  # alternating, so a burst of load hits every column alike
            for call, column in zip(calls, times, strict=True):
                column.append(_once(call, number))
        cells = [min(column) for column in times]
        print(f"{label:<20} {size:>7}" + "".join(f" {cell:>10.3f}" for cell in cells))


if __name__ == "__main__":
    main()
