"""Start-up costs: ``import undying``, and process start -> first resumed step.

(a) import time. Fresh interpreters, interleaved: ``python -c pass`` (the bare interpreter,
    with the venv's site), ``python -c "import asyncio"`` (a reference: the stdlib module any
    async library needs) and ``python -c "import undying"``; wall time of each subprocess.
    Reported absolute and minus the bare interpreter (the cost of the import itself), median
    and min..max. Also the heaviest imports according to ``python -X importtime`` (medians
    over as many runs), by cumulative and by self time.

    Two settings: "cached" gives the child a bytecode cache (PYTHONPYCACHEPREFIX in a temp dir,
    filled by compileall and a warm-up import before anything is timed, with
    PYTHONDONTWRITEBYTECODE removed from the children's environment), as a pip-installed
    package has; "no cache" runs the children with the
    environment as it is, which in this sandbox has PYTHONDONTWRITEBYTECODE=1, so undying's own
    modules are compiled from source at every start. Targets are judged on "cached".

(b) time to the first resumed step. A child process executes a 20-step run and is SIGKILLed
    after step 10 (synchronised on its stdout). Per repetition, a copy of that database is
    recovered by a new process (bench/_workload.py recover) that prints ``time.time()`` when
    its first newly executed step runs; the figure is that stamp minus ``time.time()`` taken
    just before ``subprocess.Popen``. It includes interpreter start, ``import undying``,
    opening the store, claiming the dead worker's run, replaying 10 steps.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as common
import replay

TARGET_IMPORT_MS = 100.0
TARGET_FIRST_STEP_MS = 150.0


def _spawn_time(code: str, env: dict[str, str] | None) -> float:
    start = time.perf_counter()
    subprocess.run([common.PYTHON, "-c", code], check=True, env=env)
    return time.perf_counter() - start


CODES = {"bare": "pass", "asyncio": "import asyncio", "undying": "import undying"}


def import_times(reps: int, env: dict[str, str] | None) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in CODES}
    _spawn_time("import undying", env)  # warm the OS file cache (and bytecode cache)
    for _ in range(reps):
        for key, code in CODES.items():
            out[key].append(_spawn_time(code, env) * 1e3)
    return out


def _importtime_rows(
    env: dict[str, str] | None, code: str = "import undying"
) -> dict[str, tuple[float, float, str]]:
    """module -> (self ms, cumulative ms, indented name) from one ``-X importtime`` run."""
    out = subprocess.run(
        [common.PYTHON, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stderr
    rows: dict[str, tuple[float, float, str]] = {}
    for line in out.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line[len("import time:") :].split("|")
        try:
            self_us, cumulative_us = int(parts[0]), int(parts[1])
        except ValueError:
            continue  # the header line
        name = parts[2].strip()
        # a submodule whose package imports it is listed twice (inner line: its body)
        prior_self, prior_cumulative, _ = rows.get(name, (0.0, 0.0, ""))
        rows[name] = (
            prior_self + self_us / 1e3,
            max(prior_cumulative, cumulative_us / 1e3),
            parts[2].rstrip(),
        )
    return rows


def heaviest_imports(
    env: dict[str, str] | None, runs: int, top: int = 15
) -> tuple[list[tuple[str, float, float]], list[tuple[str, float, float]]]:
    """The slowest imports under -X importtime, medians over ``runs`` fresh interpreters:
    (by cumulative time, as a tree; by self time, flat, among the modules a bare
    ``import asyncio`` does not load: what undying adds). Self time says where the time goes
    (a module's own body: class creation, dataclasses, compiled regexes); cumulative says
    which import to make lazy to save it."""
    samples = [_importtime_rows(env) for _ in range(runs)]
    names = [n for n in samples[0] if all(n in s for s in samples)]
    med = {
        n: (
            common.median([s[n][0] for s in samples]),
            common.median([s[n][1] for s in samples]),
        )
        for n in names
    }
    tree = sorted(names, key=lambda n: -med[n][1])[:top]
    tree.sort(key=list(samples[0]).index, reverse=True)  # importtime prints children first
    by_cumulative = [(samples[0][n][2], *med[n]) for n in tree]
    also_asyncio = _importtime_rows(env, "import asyncio")
    own = [n for n in names if n not in also_asyncio]
    by_self = [(n, *med[n]) for n in sorted(own, key=lambda n: -med[n][0])[:top]]
    return by_cumulative, by_self


def compile_bytecode(env: dict[str, str]) -> int:
    """Fill the child bytecode cache before anything is timed; returns the .pyc count.

    The sandbox's PYTHONDONTWRITEBYTECODE=1 is dropped from ``env`` (common.bytecode_env), so
    the children read and write .pyc files under its PYTHONPYCACHEPREFIX: compileall writes
    undying's own modules there, and one warm-up import writes the stdlib and third-party
    modules that ``import undying`` and a recovering worker load.
    """
    subprocess.run(
        [common.PYTHON, "-m", "compileall", "-q", os.path.dirname(undying_file())],
        check=True,
        env=env,
    )
    subprocess.run(
        [common.PYTHON, "-c", "import undying, undying.store.sqlite"], check=True, env=env
    )
    root = env["PYTHONPYCACHEPREFIX"]
    return sum(f.endswith(".pyc") for _, _, files in os.walk(root) for f in files)


def undying_file() -> str:
    """undying/__init__.py of the interpreter the children run (the same PYTHONPATH)."""
    return subprocess.run(
        [common.PYTHON, "-c", "import undying; print(undying.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def first_step_times(
    files: common.FreshFiles, reps: int, env: dict[str, str] | None
) -> dict[str, list[float]]:
    steps, crash_at = 20, 10
    crashed = files.path("crashed")
    replay.prepare_crashed(crashed, steps, crash_at, 0)
    warm = replay.copy_db(crashed, Path(files.path("warm")).parent)
    replay.recover_once(warm, steps, crash_at, 0, env)
    out: dict[str, list[float]] = {"launch": [], "open": []}
    for _ in range(reps):
        fresh = replay.copy_db(crashed, Path(files.path("recover")).parent)
        r = replay.recover_once(fresh, steps, crash_at, 0, env)
        out["launch"].append(r["from_launch"] * 1e3)
        out["open"].append(r["from_open"] * 1e3)
    return out


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    args = p.parse_args(argv)
    reps = args.reps or (5 if args.quick else 9)
    results = common.Figures("startup")
    print(f"start-up: median of {reps}")
    print(common.env_line())
    rows = []
    figures: dict[str, dict[str, float]] = {}
    heavy: list[tuple[str, float, float]] = []
    heavy_self: list[tuple[str, float, float]] = []
    with common.temp_dir(args.tmp) as root:
        files = common.FreshFiles(root)
        settings = {
            "cached": common.bytecode_env(root / "pycache"),
            "no cache": None,
        }
        cached_env = settings["cached"]
        assert cached_env is not None
        pycs = compile_bytecode(cached_env)
        print(
            f"  [cached] bytecode compiled first: {pycs} .pyc files under "
            "PYTHONPYCACHEPREFIX (compileall of undying + one warm-up import), "
            "PYTHONDONTWRITEBYTECODE unset for those children",
            flush=True,
        )
        for label, env in settings.items():
            t = import_times(reps, env)
            minus = {k: [v - b for v, b in zip(t[k], t["bare"], strict=True)] for k in CODES}
            first = first_step_times(files, reps, env)
            med = {k: common.median(v) for k, v in t.items()}
            mmed = {k: common.median(v) for k, v in minus.items()}
            fl, fo = common.median(first["launch"]), common.median(first["open"])
            tag = label.replace(" ", "_")
            meta = {"bytecode": label}
            results.add(f"startup.{tag}.bare", "python -c pass", "ms", t["bare"], **meta)
            results.add(
                f"startup.{tag}.import",
                "import undying, minus the bare interpreter",
                "ms",
                minus["undying"],
                target=TARGET_IMPORT_MS,
                **meta,
            )
            results.add(
                f"startup.{tag}.first_step",
                "process start -> first resumed step",
                "ms",
                first["launch"],
                target=TARGET_FIRST_STEP_MS,
                **meta,
            )
            results.add(
                f"startup.{tag}.first_step_open",
                "App open -> first resumed step",
                "ms",
                first["open"],
                **meta,
            )
            figures[label] = {
                "bare": med["bare"],
                "undying": med["undying"],
                "import": mmed["undying"],
                "asyncio": mmed["asyncio"],
                "first": fl,
                "open": fo,
            }
            rows += [
                [
                    f"[{label}] python -c pass (bare interpreter)",
                    med["bare"],
                    "",
                    common.spread(t["bare"]),
                ],
                [
                    f'[{label}] python -c "import asyncio" (reference)',
                    med["asyncio"],
                    mmed["asyncio"],
                    common.spread(t["asyncio"]),
                ],
                [
                    f'[{label}] python -c "import undying"',
                    med["undying"],
                    mmed["undying"],
                    common.spread(t["undying"]),
                ],
                [
                    f"[{label}] process start -> first resumed step",
                    fl,
                    "",
                    common.spread(first["launch"]),
                ],
                [
                    f"[{label}]   of which App open -> first resumed step",
                    fo,
                    "",
                    common.spread(first["open"]),
                ],
            ]
            if label == "cached":
                heavy, heavy_self = heaviest_imports(env, reps)
            print(
                f"  .. {label}: import undying {mmed['undying']:.1f} ms over bare, "
                f"first resumed step {fl:.1f} ms",
                flush=True,
            )
    print()
    print(
        common.table("Start-up (ms, medians)", ["what", "absolute", "minus bare", "min..max"], rows)
    )
    print()
    print(
        common.table(
            f"Slowest imports under -X importtime (cached, median of {reps} runs, ms)",
            ["module (indent = imported by the line above)", "self", "cumulative"],
            heavy,
        )
    )
    print()
    print(
        common.table(
            f"Most self time under -X importtime, modules `import asyncio` does not load "
            f"(cached, median of {reps} runs, ms)",
            ["module", "self", "cumulative"],
            heavy_self,
        )
    )
    c = figures["cached"]
    print()
    print(
        f"targets: import undying <= {TARGET_IMPORT_MS:g} ms (judged minus the bare "
        f"interpreter, cached); first resumed step <= {TARGET_FIRST_STEP_MS:g} ms including "
        "interpreter start (cached)"
    )
    print(
        f"undying's import costs {c['import'] / c['asyncio']:.2f}x an `import asyncio` "
        f"measured alongside ({c['asyncio']:.1f} ms)"
    )
    results.write(args.json)
    common.emit_summary(
        [
            common.summary_line(
                "import undying (bytecode cached)",
                f"{c['import']:.1f} ms over a {c['bare']:.1f} ms bare interpreter "
                f"({c['undying']:.1f} ms absolute; import asyncio alone {c['asyncio']:.1f} ms)",
                f"<= {TARGET_IMPORT_MS:g} ms",
                c["import"] <= TARGET_IMPORT_MS,
            ),
            common.summary_line(
                "process start -> first resumed step (bytecode cached)",
                f"{c['first']:.1f} ms (App open -> step {c['open']:.1f} ms)",
                f"<= {TARGET_FIRST_STEP_MS:g} ms",
                c["first"] <= TARGET_FIRST_STEP_MS,
            ),
            common.summary_line(
                "same, no bytecode cache (PYTHONDONTWRITEBYTECODE=1 as in this sandbox)",
                f"import {figures['no cache']['import']:.1f} ms, first resumed step "
                f"{figures['no cache']['first']:.1f} ms",
                "(info)",
                None,
            ),
        ]
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
