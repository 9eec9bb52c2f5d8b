-- Named queries for the SQLite store. Each block starts with "-- name: <name>".
-- Queries that return runs, entries or events name their columns as the record's fields, in
-- the record's order (store/rows.py maps them by name, and passes them positionally when the
-- order matches). Lists of values arrive as one JSON array, read with json_each(?); byte
-- strings in them are hex, read back with unhex() (built in since SQLite 3.41, and supplied by
-- the store on older libraries).

-- The migration ledger (store/migrations.py).

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS undying_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at REAL NOT NULL
)

-- name: applied_migrations
SELECT version, name FROM undying_migrations

-- name: migration_applied
-- Re-checked inside the migration's own BEGIN IMMEDIATE: another process may have applied it
-- since the ledger was read.
SELECT 1 FROM undying_migrations WHERE version = ?

-- name: record_migration
INSERT INTO undying_migrations (version, name, applied_at) VALUES (?, ?, ?)

-- Runs and journals.

-- name: insert_run
INSERT INTO runs (run_id, workflow, status, input, owner, lease_expires, epoch, parent_id,
                  queue, priority, deadline, created_at, updated_at, concurrency_key)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (run_id) DO NOTHING

-- name: dedup_holder
-- The run holding a start's dedup key (read inside the start's BEGIN IMMEDIATE).
SELECT run_id FROM dedup_keys WHERE workflow = ? AND key = ? AND expires_at > ?

-- name: hold_dedup_key
INSERT INTO dedup_keys (workflow, key, run_id, expires_at) VALUES (?, ?, ?, ?)
ON CONFLICT (workflow, key) DO UPDATE SET
    run_id = excluded.run_id, expires_at = excluded.expires_at

-- name: get_run
SELECT run_id, workflow, status, input, epoch, owner, output, error, lease_expires, wake_at,
       cancel_requested, parent_id, queue, priority, deadline, status_value, generation,
       created_at, updated_at, stalled_takeovers, progress_mark
FROM runs WHERE run_id = ?

-- name: append_entry
-- The epoch check is folded into the INSERT: a fenced-out writer inserts nothing.
INSERT INTO journal (run_id, seq, kind, name, digest, status, attempt, started_at,
                     finished_at, payload)
SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ? FROM runs WHERE run_id = ? AND epoch = ?
ON CONFLICT (run_id, seq) DO UPDATE SET
    kind = excluded.kind, name = excluded.name, digest = excluded.digest,
    status = excluded.status, attempt = excluded.attempt, started_at = excluded.started_at,
    finished_at = excluded.finished_at, payload = excluded.payload
WHERE journal.status IN ('intent', 'waiting')

-- name: check_epoch
SELECT epoch FROM runs WHERE run_id = ?

-- name: load_journal_meta
SELECT seq, kind, name, status, CASE WHEN length(payload) <= ?1 THEN payload END AS payload,
       digest, attempt, started_at, finished_at, coalesce(length(payload) > ?1, 0) AS deferred
FROM journal WHERE run_id = ?2 ORDER BY seq

-- name: load_payloads
SELECT seq, payload FROM journal WHERE run_id = ? AND seq BETWEEN ? AND ?

-- name: finish_run
UPDATE runs SET status = ?, output = ?, error = ?, owner = NULL, lease_expires = NULL,
                wake_at = NULL, wait_events = NULL, updated_at = ?
WHERE run_id = ? AND epoch = ?

-- name: wake_parent
UPDATE runs SET wake_at = 0, updated_at = ?
WHERE run_id = ? AND status = 'waiting' AND instr(wait_events, char(10) || ? || char(10)) > 0

-- name: insert_event
INSERT INTO events (run_id, name, key, payload, created_at) VALUES (?, ?, ?, ?, ?)
ON CONFLICT DO NOTHING

-- name: suspend_run
UPDATE runs SET status = 'waiting', owner = NULL, lease_expires = NULL, wait_events = ?,
    wake_at = CASE WHEN cancel_requested = 1 OR EXISTS (
        SELECT 1 FROM events e WHERE e.run_id = runs.run_id AND e.consumed_seq IS NULL
          AND instr(?, char(10) || e.name || char(10)) > 0) THEN 0 ELSE ? END,
    updated_at = ?
WHERE run_id = ? AND epoch = ?

-- name: release_run
UPDATE runs SET status = 'pending', owner = NULL, lease_expires = NULL, updated_at = ?
WHERE run_id = ? AND owner = ? AND status = 'running'

-- name: set_status_value
UPDATE runs SET status_value = ?, updated_at = ? WHERE run_id = ? AND epoch = ?

-- name: claim_due
-- Every claim notes where the journal stands (progress_mark, from the run_progress view); a
-- claim that finds it moved since the last one resets the count of take-overs without
-- progress (see take_over).
UPDATE runs SET status = 'running', owner = ?, lease_expires = ?, epoch = epoch + 1,
                wake_at = NULL, wait_events = NULL, updated_at = ?,
    stalled_takeovers = CASE
        WHEN progress_mark = (SELECT mark FROM run_progress p WHERE p.run_id = runs.run_id)
        THEN stalled_takeovers ELSE 0 END,
    progress_mark = (SELECT mark FROM run_progress p WHERE p.run_id = runs.run_id)
WHERE run_id IN (
    SELECT run_id FROM runs
    WHERE (status = 'pending' OR (status = 'waiting' AND wake_at <= ?))
      AND queue IS NULL  -- a queued run goes only to workers that know the queue's limits
    ORDER BY priority DESC, created_at LIMIT ?)
RETURNING run_id, workflow, status, input, epoch, owner, output, error, lease_expires, wake_at,
          cancel_requested, parent_id, queue, priority, deadline, status_value, generation,
          created_at, updated_at, stalled_takeovers, progress_mark

-- name: claim_queue
-- Notes the journal's progress like claim_due.
UPDATE runs SET status = 'running', owner = ?, lease_expires = ?, epoch = epoch + 1,
                wake_at = NULL, wait_events = NULL, updated_at = ?,
    stalled_takeovers = CASE
        WHEN progress_mark = (SELECT mark FROM run_progress p WHERE p.run_id = runs.run_id)
        THEN stalled_takeovers ELSE 0 END,
    progress_mark = (SELECT mark FROM run_progress p WHERE p.run_id = runs.run_id)
WHERE run_id IN (
    SELECT run_id FROM runs
    WHERE queue = ? AND (status = 'pending' OR (status = 'waiting' AND wake_at <= ?))
    ORDER BY priority DESC, created_at LIMIT ?)
RETURNING run_id, workflow, status, input, epoch, owner, output, error, lease_expires, wake_at,
          cancel_requested, parent_id, queue, priority, deadline, status_value, generation,
          created_at, updated_at, stalled_takeovers, progress_mark

-- name: claim_queue_per_key
-- claim_queue for a queue with a per-key limit: a due run with a concurrency key is taken
-- only while its key has room, counting the key's runs running now (any worker's: the claim
-- holds the write lock) and those before it in this claim (row_number, in claim order).
UPDATE runs SET status = 'running', owner = :owner, lease_expires = :lease_expires,
                epoch = epoch + 1, wake_at = NULL, wait_events = NULL, updated_at = :now,
    stalled_takeovers = CASE
        WHEN progress_mark = (SELECT mark FROM run_progress p WHERE p.run_id = runs.run_id)
        THEN stalled_takeovers ELSE 0 END,
    progress_mark = (SELECT mark FROM run_progress p WHERE p.run_id = runs.run_id)
WHERE run_id IN (
    SELECT run_id FROM (
        SELECT run_id, priority, created_at, concurrency_key,
               row_number() OVER (PARTITION BY concurrency_key
                                  ORDER BY priority DESC, created_at) AS nth
        FROM runs
        WHERE queue = :queue AND (status = 'pending' OR (status = 'waiting' AND wake_at <= :now))
    ) AS due
    WHERE concurrency_key IS NULL
       OR nth + (SELECT count(*) FROM runs AS busy
                 WHERE busy.queue = :queue AND busy.status = 'running'
                   AND busy.concurrency_key = due.concurrency_key) <= :per_key
    ORDER BY priority DESC, created_at LIMIT :limit)
RETURNING run_id, workflow, status, input, epoch, owner, output, error, lease_expires, wake_at,
          cancel_requested, parent_id, queue, priority, deadline, status_value, generation,
          created_at, updated_at, stalled_takeovers, progress_mark

-- name: count_queue_running
SELECT count(*) FROM runs WHERE queue = ? AND status = 'running'

-- name: count_queue_started_since
SELECT count(*) FROM queue_starts WHERE queue = ? AND started_at > ?

-- name: prune_queue_starts
DELETE FROM queue_starts WHERE queue = ? AND started_at <= ?

-- name: record_queue_start
INSERT INTO queue_starts (queue, started_at) VALUES (?, ?)

-- name: running_owners
SELECT DISTINCT owner FROM runs WHERE status = 'running' AND owner IS NOT NULL AND owner <> ?

-- name: take_over
-- A take-over that finds the journal where the last claim left it counts one more take-over
-- without progress (the last owner died, or stopped renewing its lease, journaling nothing);
-- progress resets the count. The worker quarantines a run whose count passes
-- App(max_takeovers_without_progress=...).
UPDATE runs SET owner = ?, lease_expires = ?, epoch = epoch + 1, updated_at = ?,
    stalled_takeovers = CASE
        WHEN progress_mark = (SELECT mark FROM run_progress p WHERE p.run_id = runs.run_id)
        THEN stalled_takeovers + 1 ELSE 0 END,
    progress_mark = (SELECT mark FROM run_progress p WHERE p.run_id = runs.run_id)
WHERE run_id IN (
    SELECT run_id FROM runs
    WHERE status = 'running' AND (lease_expires < ? OR owner IN (SELECT value FROM json_each(?)))
    LIMIT ?)
RETURNING run_id, workflow, status, input, epoch, owner, output, error, lease_expires, wake_at,
          cancel_requested, parent_id, queue, priority, deadline, status_value, generation,
          created_at, updated_at, stalled_takeovers, progress_mark

-- name: heartbeat
UPDATE runs SET lease_expires = ?
WHERE owner = ? AND status = 'running' AND run_id IN (SELECT value FROM json_each(?))

-- name: cancelled_owned
SELECT run_id FROM runs WHERE owner = ? AND status = 'running' AND cancel_requested = 1

-- name: next_wake_at
SELECT min(wake_at) FROM runs WHERE status = 'waiting' AND wake_at IS NOT NULL

-- name: put_blob
INSERT INTO blobs (hash, data, written_at) VALUES (?, ?, ?)
ON CONFLICT (hash) DO UPDATE SET written_at = excluded.written_at

-- name: take_event
SELECT id, payload FROM events
WHERE run_id = ? AND name = ? AND consumed_seq IS NULL ORDER BY id LIMIT 1

-- name: consume_event
UPDATE events SET consumed_seq = ? WHERE id = ?

-- name: run_tree
WITH RECURSIVE tree(run_id) AS (
    SELECT run_id FROM runs WHERE run_id = ?
    UNION
    SELECT r.run_id FROM runs r JOIN tree t ON r.parent_id = t.run_id
)
SELECT r.run_id, r.status FROM runs r JOIN tree t ON r.run_id = t.run_id

-- name: cancel_idle
UPDATE runs SET status = 'cancelled', error = ?, cancel_requested = 1, owner = NULL,
                wake_at = NULL, wait_events = NULL, updated_at = ?
WHERE run_id = ? AND status IN ('pending', 'waiting')

-- name: flag_cancel
UPDATE runs SET cancel_requested = 1, updated_at = ? WHERE run_id = ? AND status = 'running'

-- name: archive_generation
INSERT INTO lineage (run_id, generation, input, ended_at)
SELECT run_id, generation, input, ? FROM runs WHERE run_id = ? AND epoch = ?

-- name: next_generation
UPDATE runs SET input = ?, generation = generation + 1, status_value = NULL, updated_at = ?
WHERE run_id = ? AND epoch = ?

-- name: clear_journal
DELETE FROM journal WHERE run_id = ?

-- name: copy_journal
INSERT INTO journal (run_id, seq, kind, name, digest, status, attempt, started_at, finished_at, payload)
SELECT ?, seq, kind, name, digest, status, attempt, started_at, finished_at, payload
FROM journal WHERE run_id = ? AND seq < ? AND status IN ('ok', 'error')

-- name: resume_run
UPDATE runs SET status = 'pending', error = NULL, cancel_requested = 0, owner = NULL,
                lease_expires = NULL, stalled_takeovers = 0, updated_at = ?
WHERE run_id = ? AND status IN ('failed', 'cancelled')

-- name: load_state
SELECT payload FROM journal
WHERE run_id = ? AND kind = 'state' AND name = ? AND seq < ? AND status = 'ok'
ORDER BY seq DESC LIMIT 1

-- name: finished_run_trees
-- Ended top-level runs last updated before ?, with all their descendants (whatever their
-- status): what delete_finished_runs deletes, with their rows below.
WITH RECURSIVE tree (run_id) AS (
    SELECT run_id FROM runs
    WHERE status IN ('completed', 'failed', 'cancelled') AND updated_at < ?
      AND parent_id IS NULL
    UNION
    SELECT r.run_id FROM runs r JOIN tree t ON r.parent_id = t.run_id
)
SELECT run_id FROM tree

-- name: delete_journals
DELETE FROM journal WHERE run_id IN (SELECT value FROM json_each(?))

-- name: delete_events
DELETE FROM events WHERE run_id IN (SELECT value FROM json_each(?))

-- name: delete_lineage
DELETE FROM lineage WHERE run_id IN (SELECT value FROM json_each(?))

-- name: delete_usage
DELETE FROM usage WHERE run_id IN (SELECT value FROM json_each(?))

-- name: delete_dedup_keys
-- The keys of deleted runs, and keys that expired before the cut-off.
DELETE FROM dedup_keys WHERE run_id IN (SELECT value FROM json_each(?)) OR expires_at < ?

-- name: delete_runs
DELETE FROM runs WHERE run_id IN (SELECT value FROM json_each(?))

-- name: ref_payloads
SELECT payload FROM journal WHERE substr(payload, 1, 1) = x'10'

-- name: blob_hashes
SELECT hash FROM blobs WHERE written_at < ?

-- name: get_blobs
-- A join rather than IN (?, ?, ...): one statement text (prepared once) for any number of
-- hashes, and measured no slower than 500 placeholders.
SELECT b.hash, b.data FROM json_each(?) AS h JOIN blobs AS b ON b.hash = unhex(h.value)

-- name: delete_blobs
-- Spares a blob re-used (re-written) since the mark phase.
DELETE FROM blobs
WHERE hash IN (SELECT unhex(value) FROM json_each(?)) AND written_at < ?

-- Read side (store.base.ReadSide: the CLI and the web UI). A filter left NULL matches all.

-- name: list_runs
SELECT run_id, workflow, status, input, epoch, owner, output, error, lease_expires, wake_at,
       cancel_requested, parent_id, queue, priority, deadline, status_value, generation,
       created_at, updated_at, stalled_takeovers, progress_mark
FROM runs
WHERE (:status IS NULL OR status = :status)
  AND (:workflow IS NULL OR workflow = :workflow)
  AND (:parent_id IS NULL OR parent_id = :parent_id)
  AND (:created_after IS NULL OR created_at >= :created_after)
  AND (:run_id_contains IS NULL OR instr(run_id, :run_id_contains) > 0)
ORDER BY created_at DESC
LIMIT :limit OFFSET :offset

-- name: count_runs_by_status
SELECT status, count(*) FROM runs
WHERE (:workflow IS NULL OR workflow = :workflow)
  AND (:parent_id IS NULL OR parent_id = :parent_id)
  AND (:created_after IS NULL OR created_at >= :created_after)
  AND (:run_id_contains IS NULL OR instr(run_id, :run_id_contains) > 0)
GROUP BY status

-- name: list_workflows
SELECT DISTINCT workflow FROM runs ORDER BY workflow

-- name: list_events
SELECT name, key, payload, created_at, consumed_seq FROM events
WHERE run_id = ? ORDER BY id LIMIT ?

-- name: put_usage
INSERT INTO usage (run_id, generation, seq, epoch, attempt, kind, provider, model, outcome,
                   calls, input_tokens, output_tokens, cached_tokens, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
-- A spent row replaces its earlier self (a stream: started, then finished); saved rows add up.
ON CONFLICT (run_id, generation, seq, epoch, attempt, kind, provider, model) DO UPDATE SET
    outcome = excluded.outcome,
    calls = CASE WHEN excluded.kind = 'saved' THEN usage.calls + excluded.calls
                 ELSE excluded.calls END,
    input_tokens = CASE WHEN excluded.kind = 'saved' THEN usage.input_tokens + excluded.input_tokens
                        ELSE excluded.input_tokens END,
    output_tokens = CASE WHEN excluded.kind = 'saved'
                         THEN usage.output_tokens + excluded.output_tokens
                         ELSE excluded.output_tokens END,
    cached_tokens = CASE WHEN excluded.kind = 'saved'
                         THEN usage.cached_tokens + excluded.cached_tokens
                         ELSE excluded.cached_tokens END,
    created_at = excluded.created_at

-- name: load_usage
SELECT kind, outcome, provider, model, SUM(calls) AS calls,
       SUM(input_tokens) AS input_tokens, SUM(output_tokens) AS output_tokens,
       SUM(cached_tokens) AS cached_tokens
FROM usage WHERE run_id = ?
GROUP BY kind, outcome, provider, model
ORDER BY kind, provider, model, outcome

-- Durable streams (007_streams.sql). append_stream runs these in one BEGIN IMMEDIATE, so the
-- run's epoch and status, the stream's length and the journal entries are read and written
-- under one write lock.

-- name: stream_entry_written
-- Workflow code's publish or close already journaled at this position: the append is done.
SELECT 1 FROM journal WHERE run_id = ? AND seq = ? AND kind = ? AND name = ? AND status = 'ok'

-- name: stream_origin_written
-- A step's batch whose first value is stored already (a retry after a lost acknowledgement).
SELECT 1 FROM stream_items
WHERE run_id = ? AND stream = ? AND generation = ? AND seq = ? AND epoch = ? AND attempt = ?
  AND idx = ? AND attempt > 0  -- the partial index stream_items_origin

-- name: stream_run
SELECT epoch, status FROM runs WHERE run_id = ?

-- name: stream_discarded
-- The values earlier attempts of a step (origins before this epoch and attempt) left in the
-- stream since the step's last marker: what a marker put now makes void.
SELECT count(*) FROM stream_items
WHERE run_id = :run_id AND stream = :stream AND generation = :generation AND seq = :seq
  AND attempt > 0 AND kind = 'value' AND (epoch, attempt) < (:epoch, :attempt)
  AND stream_offset > coalesce((
      SELECT max(stream_offset) FROM stream_items
      WHERE run_id = :run_id AND stream = :stream AND generation = :generation AND seq = :seq
        AND attempt > 0 AND kind = 'retry'), -1)

-- name: reserve_stream
-- Take `length` offsets (a close takes none and closes). Refused (no row) for a closed
-- stream, unless this is a close: closing twice is closing once.
INSERT INTO streams (run_id, stream, length, closed_at, created_at, updated_at)
VALUES (:run_id, :stream, :length, :closed_at, :now, :now)
ON CONFLICT (run_id, stream) DO UPDATE SET
    length = streams.length + excluded.length,
    closed_at = coalesce(streams.closed_at, excluded.closed_at),
    updated_at = excluded.updated_at
WHERE streams.closed_at IS NULL OR excluded.length = 0
RETURNING length

-- name: insert_stream_item
INSERT INTO stream_items (run_id, stream, stream_offset, kind, generation, seq, epoch, attempt,
                          idx, discarded, payload, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)

-- name: read_stream
-- One statement, one snapshot: the run's status, the stream's length and closing, and its
-- items from the offset (no row at all: no such run; one row of NULL items: none yet).
SELECT r.status AS run_status, h.length, h.closed_at, i.stream_offset, i.kind,
       i.payload, i.generation, i.seq, i.attempt, i.discarded, i.created_at
FROM runs r
LEFT JOIN streams h ON h.run_id = r.run_id AND h.stream = :stream
LEFT JOIN (SELECT * FROM stream_items
           WHERE run_id = :run_id AND stream = :stream AND stream_offset >= :offset
           ORDER BY stream_offset LIMIT :limit) i ON 1
WHERE r.run_id = :run_id
ORDER BY i.stream_offset

-- name: list_streams
SELECT stream AS name, length, closed_at, created_at, updated_at FROM streams
WHERE run_id = ? ORDER BY created_at, stream

-- name: copy_stream_items
-- fork: what the source's current generation appended from positions below the fork point,
-- renumbered from 0 in each stream, as generation 0 of the new run.
INSERT INTO stream_items (run_id, stream, stream_offset, kind, generation, seq, epoch, attempt,
                          idx, discarded, payload, created_at)
SELECT :dst, i.stream,
       row_number() OVER (PARTITION BY i.stream ORDER BY i.stream_offset) - 1,
       i.kind, 0, i.seq, i.epoch, i.attempt, i.idx, i.discarded, i.payload, i.created_at
FROM stream_items i JOIN runs r ON r.run_id = i.run_id AND r.generation = i.generation
WHERE i.run_id = :src AND i.seq < :before

-- name: copy_stream_heads
-- The new run's streams: those it got items of, and those its copied journal closed.
INSERT INTO streams (run_id, stream, length, closed_at, created_at, updated_at)
SELECT :dst, stream, sum(items), max(closed_at), min(created_at), max(created_at)
FROM (SELECT stream, 1 AS items, NULL AS closed_at, created_at FROM stream_items
      WHERE run_id = :dst
      UNION ALL
      SELECT name, 0, finished_at, finished_at FROM journal
      WHERE run_id = :dst AND kind = 'close_stream' AND status = 'ok')
GROUP BY stream

-- name: delete_stream_heads
DELETE FROM streams WHERE run_id IN (SELECT value FROM json_each(?))

-- name: delete_stream_items
DELETE FROM stream_items WHERE run_id IN (SELECT value FROM json_each(?))
-- Schedules (store.base.Schedules; the ticker fires them, pause/resume is Control's).

-- name: register_schedule
-- A schedule's definition is its code's (the latest worker to start with it wins); its state
-- (paused, last_tick, resumed_at) is never touched here.
INSERT INTO schedules (name, workflow, cron, every, timezone, missed, max_catch_up,
                       created_at, updated_at)
VALUES (:name, :workflow, :cron, :every, :timezone, :missed, :max_catch_up, :now, :now)
ON CONFLICT (name) DO UPDATE SET
    workflow = excluded.workflow, cron = excluded.cron, every = excluded.every,
    timezone = excluded.timezone, missed = excluded.missed,
    max_catch_up = excluded.max_catch_up, updated_at = excluded.updated_at

-- name: list_schedules
SELECT name, workflow, cron, every, timezone, missed, max_catch_up, paused, last_tick,
       resumed_at, created_at, updated_at
FROM schedules ORDER BY name

-- name: insert_tick_run
-- insert_run, only while the schedule may fire this tick (read under the write lock, so a
-- pause committed before cannot be missed).
INSERT INTO runs (run_id, workflow, status, input, owner, lease_expires, epoch, parent_id,
                  queue, priority, deadline, created_at, updated_at)
SELECT :run_id, :workflow, :status, :input, :owner, :lease_expires, :epoch, NULL,
       :queue, :priority, NULL, :now, :now
FROM schedules
WHERE name = :name AND paused = 0 AND (resumed_at IS NULL OR resumed_at < :tick)
ON CONFLICT (run_id) DO NOTHING

-- name: mark_tick
UPDATE schedules SET last_tick = max(coalesce(last_tick, :tick), :tick)
WHERE name = :name AND paused = 0 AND (resumed_at IS NULL OR resumed_at < :tick)

-- name: pause_schedule
-- A resume notes its time: ticks that came due while paused never run.
UPDATE schedules SET paused = :paused, updated_at = :now,
    resumed_at = CASE WHEN :paused THEN resumed_at ELSE :now END
WHERE name = :name AND paused <> :paused

-- name: schedule_exists
SELECT 1 FROM schedules WHERE name = ?
