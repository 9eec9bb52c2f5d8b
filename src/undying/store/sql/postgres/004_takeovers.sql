-- Quarantine of runs that keep taking their workers down (see take_over in queries.sql): how
-- many times in a row a run was taken over without its journal moving, and where the journal
-- stood at its last claim.
ALTER TABLE runs ADD COLUMN stalled_takeovers INTEGER NOT NULL DEFAULT 0,
                 ADD COLUMN progress_mark BIGINT NOT NULL DEFAULT 0;
-- Where a run's journal stands: generation * 2^31 + the position after its last entry, so a
-- new generation (continue_as_new empties the journal) counts as progress too. Positions are
-- 32-bit, below the stride (store.base.PROGRESS_STRIDE); max(seq) is one backward index scan.
CREATE VIEW run_progress (run_id, mark) AS
SELECT run_id, generation::bigint * 2147483648
       + coalesce((SELECT max(j.seq) FROM journal j WHERE j.run_id = runs.run_id) + 1, 0)
FROM runs;
