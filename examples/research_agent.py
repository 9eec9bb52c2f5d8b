"""Run the example research agent once and print its result.

    python examples/research_agent.py [RUN_ID]

The agent is in src/undying/demo.py (installed as ``undying.demo``, so that ``undying demo``
can crash it on purpose): a scripted model that searches twice, buys a paper with
``charge_card`` (a toy payment ledger, ./ledger.db, keyed by ``undying.idempotency_key()``)
and writes a summary. Its journal goes to ./undying.db, or $UNDYING_DATABASE_URL.

Run it twice with the same RUN_ID: the second time the run is already complete, so its result
comes back from the journal without a model call, a search or a charge. Press Ctrl-C (or kill
the process) half-way and run it again: it continues where it stopped.
"""

from __future__ import annotations

import sys

from undying.demo import TASK, app, research_agent

if __name__ == "__main__":
    run_id = sys.argv[1] if len(sys.argv) > 1 else "research-1"
    try:
        result = app.run(research_agent, TASK, run_id=run_id)
    except KeyboardInterrupt:
        sys.exit(f"\ninterrupted: run it again with the same RUN_ID ({run_id}) to continue")
    print(f"\nrun {run_id!r} completed in {result['turns']} turns:\n  {result['answer']}")
