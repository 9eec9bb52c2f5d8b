"""Real crashes: a worker process SIGKILLs itself at a chosen point, a new process recovers.

Each test runs ``crash_worker.py`` (see its docstring) until it dies by SIGKILL at the chosen
point, then runs it again on the same SQLite file and checks what the outside world saw: the
result equals an uncrashed reference run, and the effects database holds exactly the step
executions the guarantees allow, no more and no fewer.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

WORKER = Path(__file__).with_name("crash_worker.py")
STEPS = ("fetch", "compute", "ledger", "charge", "notify")
SEQ = {"random": 0, "fetch": 1, "compute": 2, "ledger": 3, "charge": 4, "notify": 5}
#: the default lease is 30 s: a recovery well below it found the dead owner through its lock
PROMPT_RECOVERY_S = 10.0


@dataclass
class Outcome:
    """What a crash-and-recover sequence left behind."""

    processes: list[subprocess.CompletedProcess[str]]
    result: dict[str, Any]
    effects: list[tuple[str, str, str, int]]  # (step, phase, key, pid) in order
    ledger: list[tuple[str, int]]
    journal: list[tuple[int, str, str]]  # (seq, kind, status)
    run: tuple[str, int]  # (status, epoch)
    recovery_seconds: float
    randoms: list[float] = field(default_factory=list)

    def count(self, step: str, phase: str) -> int:
        return sum(1 for s, p, _, _ in self.effects if (s, p) == (step, phase))

    def keys(self, step: str, phase: str) -> list[str]:
        return [k for s, p, k, _ in self.effects if (s, p) == (step, phase)]


def _run_workers(
    db: Path, effects: Path, points: str, count: int = 1
) -> tuple[list[subprocess.CompletedProcess[str]], float]:
    """Start ``count`` worker processes at once; wait for all of them."""
    started = time.monotonic()
    args = [sys.executable, str(WORKER), str(db), str(effects), points]
    procs = [
        subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(count)
    ]
    done: list[subprocess.CompletedProcess[str]] = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=90)
            done.append(subprocess.CompletedProcess(args, proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return done, time.monotonic() - started


def _describe(proc: subprocess.CompletedProcess[str]) -> str:
    return f"rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"


def crash_and_recover(tmp_path: Path, points: str, recoverers: int = 1) -> Outcome:
    """Run the worker once per crash point (each must die by SIGKILL), then ``recoverers``
    processes at once, which must all report the same result."""
    db, effects = tmp_path / "journal.db", tmp_path / "effects.db"
    expected_kills = 0 if points == "none" else len(points.split(","))
    processes: list[subprocess.CompletedProcess[str]] = []
    for _ in range(expected_kills):
        [proc], _ = _run_workers(db, effects, points)
        processes.append(proc)
        assert proc.returncode == -signal.SIGKILL, _describe(proc)
        assert "crashing at " in proc.stdout, _describe(proc)
    last, seconds = _run_workers(db, effects, points, recoverers)
    processes += last
    results: list[str] = []
    for proc in last:
        assert proc.returncode == 0, _describe(proc)
        result_lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("result ")]
        assert len(result_lines) == 1, _describe(proc)
        results.append(result_lines[0])
    assert len(set(results)) == 1, results
    randoms = [
        float(ln.split(" ", 1)[1])
        for p in processes
        for ln in p.stdout.splitlines()
        if ln.startswith("random ")
    ]
    with sqlite3.connect(effects) as conn:
        effect_rows = conn.execute(
            "SELECT step, phase, key, pid FROM effects ORDER BY id"
        ).fetchall()
    conn.close()
    with sqlite3.connect(db) as conn:
        ledger = conn.execute("SELECT run_id, amount FROM ledger ORDER BY id").fetchall()
        journal = conn.execute(
            "SELECT seq, kind, status FROM journal WHERE run_id = 'crash-1' ORDER BY seq"
        ).fetchall()
        run = conn.execute("SELECT status, epoch FROM runs WHERE run_id = 'crash-1'").fetchone()
    conn.close()
    return Outcome(
        processes=processes,
        result=json.loads(results[0].split(" ", 1)[1]),
        effects=effect_rows,
        ledger=ledger,
        journal=journal,
        run=run,
        recovery_seconds=seconds,
        randoms=randoms,
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    """An uncrashed run of the same workflow and input."""
    outcome = crash_and_recover(tmp_path_factory.mktemp("reference"), "none")
    for step in STEPS:
        assert outcome.count(step, "enter") == 1
        assert outcome.count(step, "effect") == 1
    assert isinstance(outcome.result["charged"], str)
    return outcome


def without_random(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "random"}


def assert_common(
    outcome: Outcome, reference: Outcome, kills: int = 1, recoverers: int = 1
) -> None:
    """What every crash must leave intact, whatever the crash point."""
    assert len(outcome.processes) == kills + recoverers
    # The recorded random value survived: the first process saw the same one as the last.
    assert outcome.randoms and len(set(outcome.randoms)) == 1, outcome.randoms
    assert outcome.result["random"] == outcome.randoms[0]
    # The transaction's row exists exactly once, with the reference's value.
    assert outcome.ledger == reference.ledger
    assert len(outcome.ledger) == 1
    # The journal is complete, gapless, and holds no open entry.
    assert [seq for seq, _, _ in outcome.journal] == list(range(len(SEQ)))
    assert all(status in ("ok", "error") for _, _, status in outcome.journal), outcome.journal
    assert outcome.run == ("completed", 1 + kills)
    # Recovery found the dead owner through its lock, not by waiting out the 30 s lease.
    assert outcome.recovery_seconds < PROMPT_RECOVERY_S
    # Effects happen under the same idempotency key as in the reference run.
    for step in ("fetch", "compute", "charge", "notify"):
        assert set(outcome.keys(step, "effect")) <= set(reference.keys(step, "effect"))
        assert set(outcome.keys(step, "enter")) == set(reference.keys(step, "enter"))


@pytest.mark.parametrize("step", ["fetch", "compute", "notify"])
def test_crash_inside_step_before_effect_runs_the_effect_once(
    tmp_path: Path, reference: Outcome, step: str
) -> None:
    outcome = crash_and_recover(tmp_path, f"before:{step}")
    assert_common(outcome, reference)
    assert outcome.result == {**reference.result, "random": outcome.result["random"]}
    for other in STEPS:
        assert outcome.count(other, "effect") == 1, (other, outcome.effects)
        # Only the crashed step is entered again; the steps before it are replayed.
        assert outcome.count(other, "enter") == (2 if other == step else 1), (
            other,
            outcome.effects,
        )


@pytest.mark.parametrize("step", ["fetch", "compute", "notify"])
def test_crash_inside_step_after_effect_repeats_it_under_the_same_key(
    tmp_path: Path, reference: Outcome, step: str
) -> None:
    outcome = crash_and_recover(tmp_path, f"after:{step}")
    assert_common(outcome, reference)
    assert without_random(outcome.result) == without_random(reference.result)
    # At least once: the effect happened twice...
    assert outcome.count(step, "effect") == 2, outcome.effects
    # ...under one idempotency key, the reference run's, so a keyed API applies it once.
    keys = outcome.keys(step, "effect")
    assert keys[0] == keys[1] == reference.keys(step, "effect")[0] == f"crash-1:{SEQ[step]}"
    # Two different processes did it.
    assert len({pid for s, p, _, pid in outcome.effects if (s, p) == (step, "effect")}) == 2
    for other in STEPS:
        if other != step:
            assert outcome.count(other, "enter") == 1, (other, outcome.effects)
            assert outcome.count(other, "effect") == 1, (other, outcome.effects)


@pytest.mark.parametrize("step", STEPS)
def test_crash_after_call_returned_executes_every_step_exactly_once(
    tmp_path: Path, reference: Outcome, step: str
) -> None:
    outcome = crash_and_recover(tmp_path, f"returned:{step}")
    assert_common(outcome, reference)
    assert without_random(outcome.result) == without_random(reference.result)
    for other in STEPS:
        assert outcome.count(other, "enter") == 1, (other, outcome.effects)
        assert outcome.count(other, "effect") == 1, (other, outcome.effects)


def test_at_most_once_step_killed_after_its_effect_is_in_doubt(
    tmp_path: Path, reference: Outcome
) -> None:
    outcome = crash_and_recover(tmp_path, "after:charge")
    assert_common(outcome, reference)
    # The workflow got StepInDoubt at the call and went on.
    assert outcome.result["charged"] == {"in_doubt": "crash-1:4", "step": "crash_worker:charge"}
    expected = {**reference.result, "charged": outcome.result["charged"]}
    assert without_random(outcome.result) == without_random(expected)
    # The body ran exactly once: recovery did not run it again.
    assert outcome.count("charge", "enter") == 1
    assert outcome.count("charge", "effect") == 1
    assert (SEQ["charge"], "step", "error") in outcome.journal
    for other in ("fetch", "compute", "ledger", "notify"):
        assert outcome.count(other, "enter") == 1, (other, outcome.effects)


def test_at_most_once_step_killed_before_its_effect_is_in_doubt_too(
    tmp_path: Path, reference: Outcome
) -> None:
    """The intent cannot tell how far the body got: no effect is also a legitimate doubt."""
    outcome = crash_and_recover(tmp_path, "before:charge")
    assert_common(outcome, reference)
    assert outcome.result["charged"] == {"in_doubt": "crash-1:4", "step": "crash_worker:charge"}
    assert outcome.count("charge", "enter") == 1
    assert outcome.count("charge", "effect") == 0
    assert outcome.result["note"] == reference.result["note"]


@pytest.mark.parametrize("where", ["before", "after"])
def test_transaction_killed_inside_fn_rolls_back_and_commits_exactly_once(
    tmp_path: Path, reference: Outcome, where: str
) -> None:
    outcome = crash_and_recover(tmp_path, f"{where}:ledger")
    assert_common(outcome, reference)
    assert without_random(outcome.result) == without_random(reference.result)
    # fn ran twice (the first transaction never committed)...
    assert outcome.count("ledger", "enter") == 2, outcome.effects
    # ...but its write through the connection exists exactly once.
    assert outcome.ledger == [("crash-1", reference.result["total"])]
    for other in ("fetch", "compute", "charge", "notify"):
        assert outcome.count(other, "enter") == 1, (other, outcome.effects)
        assert outcome.count(other, "effect") == 1, (other, outcome.effects)


def test_recovery_does_not_wait_for_the_lease(tmp_path: Path, reference: Outcome) -> None:
    """The 30 s lease of the dead process is still valid when the new one starts; its lock
    file is not held, so the run is taken over at once."""
    outcome = crash_and_recover(tmp_path, "returned:compute")
    killed = outcome.processes[0]
    assert killed.returncode == -signal.SIGKILL
    assert outcome.recovery_seconds < PROMPT_RECOVERY_S, outcome.recovery_seconds
    assert without_random(outcome.result) == without_random(reference.result)


def test_several_crashes_in_a_row(tmp_path: Path, reference: Outcome) -> None:
    """Crash, recover, crash again during the recovery's progress, and so on."""
    outcome = crash_and_recover(tmp_path, "after:fetch,before:ledger,after:charge,after:notify")
    assert_common(outcome, reference, kills=4)
    assert outcome.result["charged"] == {"in_doubt": "crash-1:4", "step": "crash_worker:charge"}
    expected = {**reference.result, "charged": outcome.result["charged"]}
    assert without_random(outcome.result) == without_random(expected)
    counts = Counter((s, p) for s, p, _, _ in outcome.effects)
    assert counts == {
        ("fetch", "enter"): 2,
        ("fetch", "effect"): 2,
        ("compute", "enter"): 1,
        ("compute", "effect"): 1,
        ("ledger", "enter"): 2,
        ("ledger", "effect"): 1,
        ("charge", "enter"): 1,
        ("charge", "effect"): 1,
        ("notify", "enter"): 2,
        ("notify", "effect"): 2,
    }
    assert len(set(outcome.keys("notify", "effect"))) == 1


@pytest.mark.parametrize("point", ["after:compute", "after:charge", "after:ledger"])
def test_two_processes_recovering_at_once_execute_the_run_once(
    tmp_path: Path, reference: Outcome, point: str
) -> None:
    """Two workers start together after the crash; exactly one takes the run over (the
    epoch goes up once), the other waits for its result."""
    outcome = crash_and_recover(tmp_path, point, recoverers=2)
    assert_common(outcome, reference, recoverers=2)
    step = point.split(":")[1]
    for other in STEPS:
        expected_enters = 2 if other == step and step != "charge" else 1
        assert outcome.count(other, "enter") == expected_enters, (other, outcome.effects)
    assert outcome.count("compute", "effect") == (2 if step == "compute" else 1)
    if step == "charge":
        assert outcome.result["charged"] == {"in_doubt": "crash-1:4", "step": "crash_worker:charge"}
    else:
        assert without_random(outcome.result) == without_random(reference.result)
