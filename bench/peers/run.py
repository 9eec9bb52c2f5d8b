"""undying side by side with DBOS, LangGraph and Temporal: the same workloads, alternating runs.

    .venv-peers/bin/python bench/peers/run.py                # full sizes (make bench-peers)
    .venv-peers/bin/python bench/peers/run.py --quick        # N = 20 and 50, 2 repetitions
    .venv-peers/bin/python bench/peers/run.py --systems dbos --workloads overhead --reps 3

Every measurement is one fresh child process (bench/peers/child.py) on fresh storage, so no
system pays for another's imports, caches or garbage. Within one repetition each peer runs
right after the undying configuration it is compared with (bench/peers/contenders.py), and
the ratio undying / peer is taken per repetition from those adjacent runs, then the median
of the ratios (drift in the machine's speed cancels). The workloads:

* overhead: a workflow of N sequential no-op steps; wall time start -> result, divided by N
  (after a 10-step warm-up workflow in the same process).
* throughput: sequential 1-step workflows, each started and awaited before the next.
* recovery: a workflow of S steps is SIGKILLed inside step K (the marker); a new process is
  launched; the figure is the time from that launch to the marker running again (imports,
  opening, finding the interrupted run, replaying or restoring K steps). Short: S = 20,
  K = 10. Long: K = 1,000 completed steps (S = K + 1).
* storage: the growing-history agent (each step returns the whole history plus one ~1 KiB
  message); database bytes after a WAL checkpoint and VACUUM, and time per step.

Results go to ``--out`` (JSON, with the machine and every version); bench/report.py turns
them into docs/benchmarks.md's table and the plots.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _common as common
import _machine
import contenders as cs
import temporal_server

HERE = Path(__file__).resolve().parent
CHILD = str(HERE / "child.py")
SERVER = os.environ.get("UNDYING_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


class ChildFailed(RuntimeError):
    pass


class Child:
    """A child process whose stdout lines are read by a thread, so waits have deadlines."""

    def __init__(self, argv: list[str], timeout: float) -> None:
        self.deadline = time.monotonic() + timeout
        self.launched = time.time()
        self.proc = subprocess.Popen(
            [sys.executable, CHILD, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.argv = argv
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, prefix: str) -> str:
        while True:
            remaining = self.deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(remaining, 0.001))
            except queue.Empty:
                self.kill()
                raise ChildFailed(f"no {prefix} line before the deadline: {self.argv}") from None
            if line is None:
                self.proc.wait()
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise ChildFailed(
                    f"child exited ({self.proc.returncode}) without {prefix}: {self.argv}\n"
                    + err[-3000:]
                )
            if line.startswith(prefix):
                return line[len(prefix) :].strip()

    def result(self) -> dict[str, Any]:
        out = json.loads(self.wait_for("RESULT "))
        self.proc.wait()
        if "error" in out:
            raise ChildFailed(out["error"])
        return dict(out)

    def kill(self) -> float:
        """SIGKILL; returns time.time() of the kill."""
        killed = time.time()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        return killed


class Harness:
    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args = args
        self.root = root
        self.storage = cs.Storage(root, args.server)
        self.samples: dict[tuple[str, str], list[float]] = {}
        self.extra: dict[tuple[str, str], dict[str, list[float]]] = {}
        self.pairs: dict[tuple[str, str], list[tuple[float, float]]] = {}
        self.errors: list[dict[str, Any]] = []
        self.failed: set[tuple[str, str]] = set()
        self.temporal: temporal_server.DevServer | None = None
        self.queue_n = 0

    # -- plumbing ----------------------------------------------------------------------------
    def _temporal_server(self) -> temporal_server.DevServer:
        if self.temporal is None:
            folder = self.root / "temporal-shared"
            folder.mkdir(exist_ok=True)
            self.temporal = temporal_server.DevServer(folder / "temporal.db", folder / "log")
        return self.temporal

    def _child_argv(self, c: cs.Contender, task: str, db: str, extra: list[str]) -> list[str]:
        argv = [c.system, task, "--db", db, *c.child_args, *extra]
        if c.system == "temporal":
            self.queue_n += 1
            argv += [
                "--task-queue",
                f"peers-{self.queue_n}-{uuid.uuid4().hex[:6]}",
                "--activity-timeout",
                str(self.args.activity_timeout),
            ]
        return argv

    def _with_db(self, c: cs.Contender, label: str, fn: Any) -> Any:
        """Runs fn(db_argument, path_or_None) on fresh storage for contender c."""
        if c.backend == "postgres":
            with self.storage.postgres_db() as url:
                return fn(url, None)
        if c.system == "temporal":
            return fn(self._temporal_server().address, None)
        path = self.storage.sqlite_path(f"{c.key}-{label}")
        try:
            return fn(cs.db_argument(c, path), path)
        finally:
            if not self.args.keep:
                shutil.rmtree(path.parent, ignore_errors=True)

    def _record(self, figure: str, c: cs.Contender, value: float, **extra: float) -> None:
        self.samples.setdefault((figure, c.key), []).append(value)
        for k, v in extra.items():
            self.extra.setdefault((figure, c.key), {}).setdefault(k, []).append(v)

    def _measure(self, figure: str, c: cs.Contender, once: Any) -> float | None:
        """One run; None if it failed. A contender that failed a figure is not run again for
        that figure: the failures seen (a server's history limit, a crash) repeat, and each
        costs minutes."""
        if (figure, c.key) in self.failed:
            return None
        try:
            value, extra = once(c)
        except (ChildFailed, RuntimeError, OSError, subprocess.SubprocessError) as exc:
            message = str(exc).strip().splitlines()
            self.failed.add((figure, c.key))
            self.errors.append(
                {"figure": figure, "contender": c.key, "error": "\n".join(message[-12:])}
            )
            print(f"     {c.key:<24} FAILED: {message[-1] if message else exc}", flush=True)
            return None
        self._record(figure, c, value, **extra)
        return float(value)

    def alternate(self, figure: str, chosen: list[cs.Contender], once: Any, unit: str) -> None:
        """reps x (each peer right after its undying comparator; undying-normal once)."""
        peers = [c for c in chosen if not c.is_undying]
        undying = {c.key: c for c in chosen if c.is_undying}
        for rep in range(self.args.reps):
            print(f"  .. {figure}, repetition {rep + 1}/{self.args.reps}", flush=True)
            normal = undying.get("undying-sqlite-normal")
            if normal is not None:
                self._show(normal, self._measure(figure, normal, once), unit)
            for peer in peers:
                base = undying.get(cs.COMPARED_WITH[peer.key])
                mine = self._measure(figure, base, once) if base else None
                if base:
                    self._show(base, mine, unit)
                theirs = self._measure(figure, peer, once)
                self._show(peer, theirs, unit)
                if mine is not None and theirs is not None:
                    self.pairs.setdefault((figure, peer.key), []).append((mine, theirs))
            if not peers:
                for c in undying.values():
                    if c.key != "undying-sqlite-normal":
                        self._show(c, self._measure(figure, c, once), unit)

    @staticmethod
    def _show(c: cs.Contender, value: float | None, unit: str) -> None:
        if value is not None:
            print(f"     {c.key:<24} {value:12.4g} {unit}", flush=True)

    # -- workloads ---------------------------------------------------------------------------
    def overhead(self, n: int) -> Any:
        def once(c: cs.Contender) -> tuple[float, dict[str, float]]:
            def go(db: str, _path: Path | None) -> dict[str, Any]:
                argv = self._child_argv(c, "overhead", db, ["--n", str(n)])
                return Child(argv, self.args.child_timeout).result()

            out = self._with_db(c, f"overhead{n}", go)
            return out["seconds"] / n * 1e6, {"peak_rss_mb": out["peak_rss_mb"]}

        return once

    def throughput(self, count_fast: int, count_slow: int) -> Any:
        def once(c: cs.Contender) -> tuple[float, dict[str, float]]:
            count = count_fast if c.is_undying else count_slow

            def go(db: str, _path: Path | None) -> dict[str, Any]:
                argv = self._child_argv(c, "throughput", db, ["--count", str(count)])
                return Child(argv, self.args.child_timeout).result()

            out = self._with_db(c, "throughput", go)
            return count / out["seconds"], {"count": count}

        return once

    def recovery(self, steps: int, crash_at: int) -> Any:
        def once(c: cs.Contender) -> tuple[float, dict[str, float]]:
            run_id = f"peers-{uuid.uuid4().hex[:10]}"
            extra = ["--steps", str(steps), "--crash-at", str(crash_at), "--run-id", run_id]

            def go(db: str, _path: Path | None) -> tuple[float, dict[str, float]]:
                prepare = Child(self._child_argv(c, "prepare", db, extra), self.args.child_timeout)
                prepare.wait_for("READY")
                # the recovering process must use the same task queue as the dead worker
                argv = self._child_argv(c, "recover", db, extra)
                if c.system == "temporal":
                    queue_flag = prepare.argv.index("--task-queue")
                    argv[argv.index("--task-queue") + 1] = prepare.argv[queue_flag + 1]
                killed = prepare.kill()
                # a recovery that hangs must not stall the whole run for --child-timeout
                recover = Child(
                    argv, min(self.args.child_timeout, 300.0) + 3 * self.args.activity_timeout
                )
                first, since_open = (float(x) for x in recover.wait_for("FIRST ").split())
                out = recover.result()
                return first - recover.launched, {
                    "open_to_first_s": since_open,
                    "kill_to_first_s": first - killed,
                    "peak_rss_mb": out["peak_rss_mb"],
                }

            result: tuple[float, dict[str, float]] = self._with_db(c, f"recovery{crash_at}", go)
            return result

        return once

    def storage_once(self, n: int, shape: str) -> Any:
        def once(c: cs.Contender) -> tuple[float, dict[str, float]]:
            if c.backend == "postgres":
                raise ChildFailed("storage is measured on SQLite only")
            if c.system == "temporal":
                return self._temporal_storage(c, n, shape)

            def go(db: str, path: Path | None) -> tuple[float, dict[str, float]]:
                argv = self._child_argv(c, "storage", db, ["--n", str(n), "--shape", shape])
                out = Child(argv, self.args.child_timeout).result()
                assert path is not None
                ms = out["seconds"] / n * 1e3 if n else 0.0
                return float(cs.sqlite_bytes(path)), {"ms_per_step": ms}

            result: tuple[float, dict[str, float]] = self._with_db(c, f"storage{n}", go)
            return result

        return once

    def _temporal_storage(
        self, c: cs.Contender, n: int, shape: str
    ) -> tuple[float, dict[str, float]]:
        """A dev server on a fresh file for this one workflow; stopped before measuring."""
        path = self.storage.sqlite_path(f"{c.key}-storage{n}")
        server = temporal_server.DevServer(path, path.parent / "log")
        try:
            argv = self._child_argv(c, "storage", server.address, ["--n", str(n), "--shape", shape])
            out = Child(argv, self.args.child_timeout).result()
        finally:
            server.stop()
        try:
            ms = out["seconds"] / n * 1e3 if n else 0.0
            return float(cs.sqlite_bytes(path)), {"ms_per_step": ms}
        finally:
            if not self.args.keep:
                shutil.rmtree(path.parent, ignore_errors=True)

    def close(self) -> None:
        if self.temporal is not None:
            self.temporal.stop()


# -- results -----------------------------------------------------------------------------------
FIGURE_UNITS = {"overhead": "us/step", "throughput": "wf/s", "recovery": "s", "storage": "bytes"}


def _figures(h: Harness, meta: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for (figure, key), values in h.samples.items():
        c = cs.CONTENDERS[key]
        m = meta[figure]
        item = {
            "id": f"{figure}.{key}",
            "figure": figure,
            "contender": key,
            "system": c.system,
            "backend": c.backend,
            "label": c.label,
            "unit": FIGURE_UNITS[m["workload"]],
            "better": "higher" if m["workload"] == "throughput" else "lower",
            "median": common.median(values),
            "min": min(values),
            "max": max(values),
            "samples": values,
            **m,
        }
        for k, vs in h.extra.get((figure, key), {}).items():
            item[k] = {"median": common.median(vs), "min": min(vs), "max": max(vs), "samples": vs}
        out.append(item)
    return out


def _ratios(h: Harness, meta: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for (figure, peer), pairs in h.pairs.items():
        ratios = [mine / theirs for mine, theirs in pairs if theirs]
        if not ratios:
            continue
        out.append(
            {
                "figure": figure,
                "peer": peer,
                "undying": cs.COMPARED_WITH[peer],
                "unit": "x",
                "median": common.median(ratios),
                "min": min(ratios),
                "max": max(ratios),
                "samples": ratios,
                **meta[figure],
            }
        )
    return out


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="N = 20, 50; 2 repetitions: a smoke run")
    p.add_argument("--reps", type=int, default=None, help="repetitions (default 5; quick 2)")
    p.add_argument("--systems", default="dbos,langgraph,temporal")
    p.add_argument("--workloads", default="overhead,throughput,recovery,storage")
    p.add_argument("--steps", default=None, help="overhead N, comma list (default 100,1000)")
    p.add_argument("--turns", default=None, help="storage N, comma list (default 100,1000)")
    p.add_argument("--shapes", default="text,hex", help="storage message shapes")
    p.add_argument("--long", type=int, default=None, help="long recovery: steps replayed")
    p.add_argument("--count", type=int, default=None, help="throughput workflows (undying)")
    p.add_argument("--peer-count", type=int, default=None, help="throughput workflows (peers)")
    p.add_argument("--activity-timeout", type=float, default=None, help="temporal, seconds")
    p.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL contenders")
    p.add_argument("--server", default=SERVER, help="PostgreSQL server (admin database)")
    p.add_argument("--tmp", default=None, help="parent directory of the databases")
    p.add_argument("--keep", action="store_true", help="keep the databases (debugging)")
    p.add_argument("--child-timeout", type=float, default=None, help="seconds per child")
    p.add_argument("--out", default=str(HERE.parent / "results" / "peers.json"))
    args = p.parse_args(argv)
    q = args.quick
    args.reps = args.reps or (2 if q else 5)
    args.steps = common.sizes(args.steps or ("20,50" if q else "100,1000"))
    args.turns = common.sizes(args.turns or ("20,50" if q else "100,1000"))
    args.long = args.long or (50 if q else 1000)
    args.count = args.count or (20 if q else 2000)
    args.peer_count = args.peer_count or (20 if q else 200)
    args.activity_timeout = args.activity_timeout or (2.0 if q else 10.0)
    args.child_timeout = args.child_timeout or (300.0 if q else 1800.0)
    args.systems = [s for s in args.systems.split(",") if s]
    args.workloads = [w for w in args.workloads.split(",") if w]
    args.shapes = [s for s in args.shapes.split(",") if s]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    chosen = cs.select(args.systems, postgres=not args.no_postgres)
    tmp_parent = args.tmp or tempfile.gettempdir()
    machine = _machine.describe(tmp_parent, None if args.no_postgres else args.server, common.ROOT)
    started = time.perf_counter()
    print(f"peers: {[c.key for c in chosen]}, {args.reps} repetitions; {common.env_line()}")
    meta: dict[str, dict[str, Any]] = {}
    root = Path(tempfile.mkdtemp(prefix="undying-peers-", dir=tmp_parent))
    h = Harness(args, root)
    try:
        if "overhead" in args.workloads:
            for n in args.steps:
                meta[f"overhead.n{n}"] = {"workload": "overhead", "n": n}
                h.alternate(f"overhead.n{n}", chosen, h.overhead(n), "us/step")
        if "throughput" in args.workloads:
            meta["throughput"] = {"workload": "throughput"}
            h.alternate("throughput", chosen, h.throughput(args.count, args.peer_count), "wf/s")
        if "recovery" in args.workloads:
            for label, steps, crash_at in (("short", 20, 10), ("long", args.long + 1, args.long)):
                figure = f"recovery.{label}"
                meta[figure] = {"workload": "recovery", "n": crash_at, "steps": steps}
                h.alternate(figure, chosen, h.recovery(steps, crash_at), "s")
        if "storage" in args.workloads:
            sqlite_only = [c for c in chosen if c.backend == "sqlite"]
            for shape in args.shapes:
                for n in [0, *args.turns]:
                    figure = f"storage.{shape}.n{n}"
                    meta[figure] = {"workload": "storage", "n": n, "shape": shape}
                    reps = 1 if n == 0 else min(args.reps, 3)
                    h.args.reps, saved = reps, h.args.reps
                    try:
                        h.alternate(figure, sqlite_only, h.storage_once(n, shape), "bytes")
                    finally:
                        h.args.reps = saved
    finally:
        h.close()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    config = {k: v for k, v in vars(args).items() if k not in ("out",)}
    result = {
        **_machine.result_header("peers", args.quick, time.perf_counter() - started, machine),
        "config": config,
        "contenders": {
            c.key: {"system": c.system, "backend": c.backend, "label": c.label, "config": c.config}
            for c in chosen
        },
        "compared_with": {
            k: v for k, v in cs.COMPARED_WITH.items() if k in {c.key for c in chosen}
        },
        "figures": _figures(h, meta),
        "ratios": _ratios(h, meta),
        "errors": h.errors,
    }
    common.write_json(args.out, result)
    print(
        f"\n{len(result['figures'])} figures, {len(h.errors)} errors, "
        f"{result['duration_s']:.0f} s; written to {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
