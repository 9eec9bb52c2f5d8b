"""One measurement of one system, in a fresh interpreter (run by run.py; not a benchmark).

    python bench/peers/child.py SYSTEM TASK --db DB [options]

SYSTEM is undying, dbos, langgraph or temporal (one module each, sys_<name>.py, imported
alone so that no system pays for another's imports). TASK is one of:

* ``overhead``: one warm-up workflow, then one workflow of ``--n`` sequential no-op steps,
  timed from start to result.
* ``throughput``: one warm-up, then ``--count`` 1-step workflows one after another, each
  started and awaited before the next.
* ``storage``: one growing-history agent of ``--n`` turns (``--n 0``: create the empty
  schema only); the driver measures the database afterwards.
* ``prepare``: a workflow of ``--steps`` steps whose step ``--crash-at`` is the marker; the
  marker prints READY and hangs until the driver SIGKILLs this process.
* ``recover``: restart after that kill; the marker prints FIRST when it runs again, and the
  child waits for the workflow to finish (so a recovery that is wrong fails the benchmark).

Every task ends by printing ``RESULT <json>`` (bench/peers/protocol.py).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import protocol

SYSTEMS = ("undying", "dbos", "langgraph", "temporal")
TASKS = ("overhead", "throughput", "storage", "prepare", "recover")


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("system", choices=SYSTEMS)
    p.add_argument("task", choices=TASKS)
    p.add_argument("--db", required=True, help="SQLite file, PostgreSQL URL or host:port")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--shape", default="text")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--crash-at", type=int, default=10)
    p.add_argument("--run-id", default="peers-bench-run")
    p.add_argument("--durability", default="normal", help="undying: normal or full")
    p.add_argument("--dbos-api", choices=["sync", "async"], default="sync")
    p.add_argument("--langgraph-durability", choices=["sync", "async", "exit"], default="sync")
    p.add_argument("--task-queue", default="peers-bench")
    p.add_argument("--activity-timeout", type=float, default=10.0, help="temporal, seconds")
    return p.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse(argv)
    protocol.MODE = args.task if args.task in ("prepare", "recover") else "measure"
    module = importlib.import_module(f"sys_{args.system}")
    module.run(args.task, args)


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.stdout.flush()
    # Some SDKs abort in their native threads at interpreter exit (temporalio's Rust core
    # did, "PyGILState_Release ... must be current"); the result is printed, so leave now.
    os._exit(0)
