"""Crash torture in CI: at least 50 SIGKILLs of real worker processes on a mixed workload.

The harness lives in ``bench/torture.py`` (run it by hand with ``--kills 1000``); this test
runs a short version of it and requires a clean report. A failure prints the seed: replay the
same workload and kill schedule with ``UNDYING_TORTURE_SEED=<seed>`` or
``python bench/torture.py --kills 50 --runs 30 --seed <seed>``.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import torture  # noqa: E402

SEED = int(os.environ.get("UNDYING_TORTURE_SEED", "20241127"))
KILLS = 50


def test_fifty_kills_lose_nothing_and_duplicate_nothing(tmp_path: Path) -> None:
    summary = torture.run_torture(
        kills=KILLS,
        runs=30,
        steps=20,
        workers=3,
        seed=SEED,
        workdir=tmp_path,
        drain_timeout=45,  # report a stuck run well before the 120 s test timeout
        log=None,
    )
    report = torture.summary_line(summary) + "".join(f"\n  {p}" for p in summary["problems"])
    print(report)
    assert summary["kills"] >= KILLS, report
    assert summary["runs"] >= 30, report
    assert summary["completed"] == summary["runs"], report
    assert summary["effects_duplicated"] == 0, report
    assert summary["effects_lost"] == 0, report
    assert summary["amo_executed_twice"] == 0, report
    assert summary["result_mismatches"] == 0, report
    assert summary["journal_problems"] == 0, report
    assert summary["entries_rewritten"] == 0, report
    assert summary["snapshots"] > 10, report
    assert summary["ok"], report


def test_the_checker_sees_duplicates_losses_and_rewrites(tmp_path: Path) -> None:
    """A clean report means something: tamper with a clean outcome and every kind of damage
    the torture looks for is reported."""
    summary = torture.run_torture(
        kills=0, runs=6, steps=20, workers=1, seed=SEED, workdir=tmp_path, log=None
    )
    assert summary["ok"], summary["problems"]
    specs = torture.make_specs(SEED, 20, start=0, count=6)
    journal = tmp_path / "torture" / "journal.db"
    effects = tmp_path / "torture" / "effects.db"
    ref_conn = sqlite3.connect(tmp_path / "reference" / "journal.db")
    reference = torture.read_outputs(ref_conn)
    ref_conn.close()
    assert not torture.check(journal, effects, specs, reference).problems

    def first(kind: str) -> tuple[str, int]:
        return next(
            (spec.run_id, k) for spec in specs for k, (op, _) in enumerate(spec.plan) if op == kind
        )

    watch = torture.JournalWatch()
    jconn = sqlite3.connect(journal, isolation_level=None)
    econn = sqlite3.connect(effects, isolation_level=None)
    watch.snapshot(jconn, full=True)
    tx_cell, keyed_cell, amo_cell = first("tx"), first("keyed"), first("amo")
    # A transactional effect applied twice, a keyed effect lost, an at-most-once body run
    # twice, and a completed journal entry rewritten.
    jconn.execute(
        "INSERT INTO tx_effects (run_id, k, value) SELECT run_id, k, value FROM tx_effects "
        "WHERE run_id = ? AND k = ?",
        tx_cell,
    )
    econn.execute("DELETE FROM keyed WHERE run_id = ? AND k = ?", keyed_cell)
    econn.execute(
        "INSERT INTO amo_started (key, run_id, k, attempt, pid) "
        "SELECT key, run_id, k, attempt, pid FROM amo_started WHERE run_id = ? AND k = ?",
        amo_cell,
    )
    jconn.execute(
        "UPDATE journal SET payload = CAST(payload || x'00' AS BLOB) WHERE run_id = ? AND seq = ?",
        keyed_cell,
    )
    watch.snapshot(jconn, full=True)
    jconn.close()
    econn.close()

    tally = torture.check(journal, effects, specs, reference)
    assert tally.counts["effects_duplicated"] == 1, tally.problems
    assert tally.counts["tx_duplicates"] == 1, tally.problems
    assert tally.counts["effects_lost"] == 1, tally.problems
    assert tally.counts["amo_executed_twice"] == 1, tally.problems
    assert watch.rewritten == [f"journal entry {keyed_cell} was rewritten".replace("'", "")]
