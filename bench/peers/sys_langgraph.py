"""LangGraph's side of the peer workloads: a ``StateGraph`` loop with ``SqliteSaver``.

One node per step kind; a step is one super-step of the graph (the node runs, then the
checkpointer saves the state), and a conditional edge loops back to the node until the
workload's N is reached, as an agent loop is written in LangGraph. ``recursion_limit`` is
raised to N + 10 so the loop may run N super-steps.

Durability: ``graph.invoke(..., durability="sync")`` by default (``--langgraph-durability``),
LangGraph's setting that persists each checkpoint before the next step starts: the one that
loses no finished step in a crash, which is what undying and DBOS guarantee. (LangGraph's own
default, "async", writes the checkpoint while the next step runs; "exit" only at the end.)
``SqliteSaver.setup()`` sets ``journal_mode=WAL`` and leaves SQLite's ``synchronous=FULL``:
every commit is fsynced.

Recovery: LangGraph has no background worker that resumes interrupted runs; the documented
way is to invoke the graph again with ``None`` as input and the same ``thread_id``, which
continues from the last saved checkpoint (it restores the state, it does not replay steps).
"""

from __future__ import annotations

import argparse
import sqlite3
import time
import uuid
from typing import Any, TypedDict

import _shapes
import protocol
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph


class Counter(TypedDict):
    i: int
    n: int


class Crashy(TypedDict):
    i: int
    steps: int
    crash_at: int


class Agent(TypedDict):
    history: list[_shapes.Message]
    turn: int
    n: int
    shape: str


class One(TypedDict):
    i: int


def noop(state: Counter) -> dict[str, Any]:
    return {"i": state["i"] + 1}


def crashy(state: Crashy) -> dict[str, Any]:
    if state["i"] == state["crash_at"]:
        protocol.marker_sync()
    return {"i": state["i"] + 1}


def grow(state: Agent) -> dict[str, Any]:
    message = _shapes.message(state["shape"], state["turn"])
    return {"history": [*state["history"], message], "turn": state["turn"] + 1}


def one(state: One) -> dict[str, Any]:
    return {"i": state["i"] + 1}


def _loop(schema: Any, name: str, node: Any, more: Any, saver: SqliteSaver) -> Any:
    graph = StateGraph(schema)
    graph.add_node(name, node)
    graph.add_edge(START, name)
    graph.add_conditional_edges(name, lambda s: name if more(s) else END, [name, END])
    return graph.compile(checkpointer=saver)


def _config(thread: str, steps: int) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread}, "recursion_limit": steps + 10}


def run(task: str, args: argparse.Namespace) -> None:
    protocol.opening()
    conn = sqlite3.connect(args.db, check_same_thread=False)
    saver = SqliteSaver(conn)
    saver.setup()
    durability = args.langgraph_durability
    if task == "overhead":
        graph = _loop(Counter, "noop", noop, lambda s: s["i"] < s["n"], saver)
        graph.invoke({"i": 0, "n": 10}, _config("warm", 10), durability=durability)
        start = time.perf_counter()
        out = graph.invoke({"i": 0, "n": args.n}, _config("run", args.n), durability=durability)
        protocol.result(seconds=protocol.timed(start))
        assert out["i"] == args.n
    elif task == "throughput":
        builder = StateGraph(One)
        builder.add_node("one", one)
        builder.add_edge(START, "one")
        builder.add_edge("one", END)
        graph = builder.compile(checkpointer=saver)
        graph.invoke({"i": -1}, _config("warm", 1), durability=durability)
        start = time.perf_counter()
        for i in range(args.count):
            out = graph.invoke({"i": i}, _config(uuid.uuid4().hex, 1), durability=durability)
            assert out["i"] == i + 1
        protocol.result(seconds=protocol.timed(start))
    elif task == "storage":
        graph = _loop(Agent, "grow", grow, lambda s: s["turn"] < s["n"], saver)
        start = time.perf_counter()
        if args.n:
            state = {"history": [], "turn": 0, "n": args.n, "shape": args.shape}
            out = graph.invoke(state, _config("agent", args.n), durability=durability)
            assert len(out["history"]) == args.n
        protocol.result(seconds=protocol.timed(start))
    else:
        graph = _loop(Crashy, "step", crashy, lambda s: s["i"] < s["steps"], saver)
        config = _config(args.run_id, args.steps)
        if task == "prepare":
            state = {"i": 0, "steps": args.steps, "crash_at": args.crash_at}
            graph.invoke(state, config, durability=durability)
        else:  # recover: continue the thread from its last checkpoint
            out = graph.invoke(None, config, durability=durability)
            assert out["i"] == args.steps, out
            protocol.result(seconds=protocol.since_opening())
    conn.close()
