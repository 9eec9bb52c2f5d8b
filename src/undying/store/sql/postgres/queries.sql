-- Named queries for the PostgreSQL store. Each block starts with "-- name: <name>".
-- Placeholders are psycopg's (%s, %(name)s). Parameters in a SELECT list are cast, because
-- PostgreSQL cannot infer their types from an INSERT ... SELECT target.
-- Writes that make work available end with pg_notify('undying', <store token>) in the same
-- statement or transaction: the notification is sent only if the change commits.
-- Queries that return runs, entries or events name their columns as the record's fields, in
-- the record's order (store/rows.py maps them by name, and passes them positionally when the
-- order matches), and return nothing else.
--
-- The epoch fence. Every write a run's owner makes checks `epoch = <its epoch>` on the run
-- row AND locks that row until its transaction ends, in the same statement: an UPDATE of the
-- row locks it itself; an INSERT ... SELECT FROM runs says FOR SHARE. Under READ COMMITTED a
-- check alone reads the statement's snapshot, so a takeover committing while the write is in
-- flight would not stop it. With the lock, a takeover and a fenced write are ordered:
--   * a takeover (take_over, claim_due, claim_queue: FOR UPDATE SKIP LOCKED in a subquery,
--     then UPDATE ... epoch = epoch + 1) that locked the row first makes the write wait for
--     its COMMIT; the write then re-reads the newest row version (EvalPlanQual), finds the
--     new epoch, writes nothing, and is refused;
--   * a write that locked the row first is skipped by the takeover's SKIP LOCKED until it
--     commits; the next claim takes the run and its replay sees what the write wrote (an
--     at-most-once step's intent: StepInDoubt, not a second execution).
-- Row lock conflicts: FOR SHARE conflicts with FOR NO KEY UPDATE (every UPDATE here: none
-- changes run_id) and FOR UPDATE, not with itself, so a run's parallel steps do not wait for
-- each other. FOR KEY SHARE would not do: it conflicts with FOR UPDATE only, so an epoch
-- bump by a plain UPDATE would neither wait for it nor be waited for. Other UPDATEs of the
-- row (heartbeat, cancel flag, release) wait for in-flight fenced writes, all short single
-- statements, except ctx.transaction (see pg_session.IDLE_IN_TRANSACTION_MS).

-- name: lock_migrations
-- Serializes workers that start at the same moment against one empty database.
SELECT pg_advisory_xact_lock(1970168941, 0)

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS undying_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at DOUBLE PRECISION NOT NULL
)

-- name: applied_migrations
SELECT version, name FROM undying_migrations

-- name: record_migration
INSERT INTO undying_migrations (version, name, applied_at) VALUES (%s, %s, %s)

-- name: lock_worker
-- Held for the life of the worker's session; see probe_dead_owners.
SELECT pg_try_advisory_lock(hashtextextended(%s, 0))

-- name: unlock_worker
SELECT pg_advisory_unlock(hashtextextended(%s, 0))

-- name: listen
LISTEN undying

-- name: notify
SELECT pg_notify('undying', %s)

-- name: insert_run
WITH created AS (
    INSERT INTO runs (run_id, workflow, status, input, owner, lease_expires, epoch, parent_id,
                      queue, priority, deadline, created_at, updated_at, concurrency_key)
    VALUES (%(run_id)s, %(workflow)s, %(status)s, %(input)s, %(owner)s, %(lease_expires)s,
            %(epoch)s, %(parent_id)s, %(queue)s, %(priority)s, %(deadline)s, %(now)s, %(now)s,
            %(concurrency_key)s)
    ON CONFLICT (run_id) DO NOTHING
    RETURNING run_id, workflow, status, input, epoch, owner, output, error, lease_expires,
              wake_at, cancel_requested, parent_id, queue, priority, deadline, status_value,
              generation, created_at, updated_at, stalled_takeovers, progress_mark
), notified AS (
    -- a run created unclaimed is work for every worker
    SELECT pg_notify('undying', %(token)s) FROM created WHERE owner IS NULL
)
-- The condition is always true; it makes the statement run `notified` (a CTE that nothing
-- reads is not run) while the row stays exactly a run's columns.
SELECT * FROM created WHERE (SELECT count(*) FROM notified) >= 0

-- name: hold_dedup_key
-- Take a start's dedup key for its run unless another run holds it (not expired). Two
-- starts racing for a key: the second waits on the first's row, then finds it (ON CONFLICT
-- sees the newest version of the row) and returns nothing; only a condition on the
-- conflicting row itself is safe here, a subquery would read the statement's older snapshot.
INSERT INTO dedup_keys (workflow, key, run_id, expires_at)
VALUES (%(workflow)s, %(key)s, %(run_id)s, %(until)s)
ON CONFLICT (workflow, key) DO UPDATE SET
    run_id = excluded.run_id, expires_at = excluded.expires_at
WHERE dedup_keys.expires_at <= %(now)s
RETURNING run_id

-- name: dedup_holder
SELECT run_id FROM dedup_keys WHERE workflow = %(workflow)s AND key = %(key)s

-- name: get_run
SELECT run_id, workflow, status, input, epoch, owner, output, error, lease_expires, wake_at,
       cancel_requested, parent_id, queue, priority, deadline, status_value, generation,
       created_at, updated_at, stalled_takeovers, progress_mark
FROM runs WHERE run_id = %s

-- name: list_runs
SELECT run_id, workflow, status, input, epoch, owner, output, error, lease_expires, wake_at,
       cancel_requested, parent_id, queue, priority, deadline, status_value, generation,
       created_at, updated_at, stalled_takeovers, progress_mark
FROM runs
WHERE (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(workflow)s::text IS NULL OR workflow = %(workflow)s::text)
  AND (%(parent_id)s::text IS NULL OR parent_id = %(parent_id)s::text)
  AND (%(created_after)s::float8 IS NULL OR created_at >= %(created_after)s::float8)
  AND (%(run_id_contains)s::text IS NULL OR strpos(run_id, %(run_id_contains)s::text) > 0)
ORDER BY created_at DESC
LIMIT %(limit)s OFFSET %(offset)s

-- name: append_entry
-- The epoch fence is folded into the INSERT (see the top of this file): a fenced-out writer
-- inserts nothing, and the run row stays share-locked until this statement commits. So the
-- conflict update below, which lets an intent or waiting entry be replaced, only ever runs
-- for the run's current owner: a stale epoch can never overwrite an entry.
INSERT INTO journal (run_id, seq, kind, name, digest, status, attempt, started_at,
                     finished_at, payload)
SELECT %s::text, %s::integer, %s::text, %s::text, %s::bytea, %s::text, %s::integer,
       %s::float8, %s::float8, %s::bytea
FROM runs WHERE run_id = %s AND epoch = %s
FOR SHARE
ON CONFLICT (run_id, seq) DO UPDATE SET
    kind = excluded.kind, name = excluded.name, digest = excluded.digest,
    status = excluded.status, attempt = excluded.attempt, started_at = excluded.started_at,
    finished_at = excluded.finished_at, payload = excluded.payload
WHERE journal.status IN ('intent', 'waiting')

-- name: append_entries
-- append_entry for a batch (distinct seqs): one statement, one round trip, the same fence.
-- A batch is all or nothing, so a short count raises undying_fence and the statement (its
-- own transaction) rolls back.
WITH written AS (
    INSERT INTO journal (run_id, seq, kind, name, digest, status, attempt, started_at,
                         finished_at, payload)
    SELECT r.run_id, e.seq, e.kind, e.name, e.digest, e.status, e.attempt, e.started_at,
           e.finished_at, e.payload
    FROM runs r,
         unnest(%(e_seq)s::integer[], %(e_kind)s::text[], %(e_name)s::text[], %(e_digest)s::bytea[],
                %(e_status)s::text[], %(e_attempt)s::integer[], %(e_started_at)s::float8[],
                %(e_finished_at)s::float8[], %(e_payload)s::bytea[])
           AS e (seq, kind, name, digest, status, attempt, started_at, finished_at, payload)
    WHERE r.run_id = %(run_id)s AND r.epoch = %(epoch)s
    ORDER BY e.seq
    FOR SHARE OF r
    ON CONFLICT (run_id, seq) DO UPDATE SET
        kind = excluded.kind, name = excluded.name, digest = excluded.digest,
        status = excluded.status, attempt = excluded.attempt, started_at = excluded.started_at,
        finished_at = excluded.finished_at, payload = excluded.payload
    WHERE journal.status IN ('intent', 'waiting')
    RETURNING seq
)
SELECT undying_fence(count(*) = %(n)s) FROM written

-- name: check_epoch
SELECT epoch FROM runs WHERE run_id = %s

-- name: load_journal_meta
SELECT seq, kind, name, status,
       CASE WHEN length(payload) <= %(inline)s THEN payload END AS payload,
       digest, attempt, started_at, finished_at,
       coalesce(length(payload) > %(inline)s, FALSE) AS deferred
FROM journal WHERE run_id = %(run_id)s ORDER BY seq

-- name: load_payloads
SELECT seq, payload FROM journal WHERE run_id = %s AND seq = ANY(%s::integer[])

-- name: finish_run
-- The terminal status, the run's last entries, the event for its parent (keyed, so stored
-- once), the parent's wake-up and the notification: one statement, all or nothing.
-- Fenced by `finished`: the UPDATE locks the run row and, after a takeover that held it,
-- re-checks the epoch on the newest version, so the entries below join no row.
WITH finished AS (
    UPDATE runs SET status = %(status)s, output = %(output)s, error = %(error)s, owner = NULL,
                    lease_expires = NULL, wake_at = NULL, wait_events = NULL,
                    updated_at = %(now)s
    WHERE run_id = %(run_id)s AND epoch = %(epoch)s
    RETURNING run_id, parent_id
), written AS (
    INSERT INTO journal (run_id, seq, kind, name, digest, status, attempt, started_at,
                         finished_at, payload)
    SELECT f.run_id, e.seq, e.kind, e.name, e.digest, e.status, e.attempt, e.started_at,
           e.finished_at, e.payload
    FROM finished f,
         unnest(%(e_seq)s::integer[], %(e_kind)s::text[], %(e_name)s::text[], %(e_digest)s::bytea[],
                %(e_status)s::text[], %(e_attempt)s::integer[], %(e_started_at)s::float8[],
                %(e_finished_at)s::float8[], %(e_payload)s::bytea[])
           AS e (seq, kind, name, digest, status, attempt, started_at, finished_at, payload)
    ORDER BY e.seq
    ON CONFLICT (run_id, seq) DO UPDATE SET
        kind = excluded.kind, name = excluded.name, digest = excluded.digest,
        status = excluded.status, attempt = excluded.attempt, started_at = excluded.started_at,
        finished_at = excluded.finished_at, payload = excluded.payload
    WHERE journal.status IN ('intent', 'waiting')
    RETURNING seq
), child_event AS (
    INSERT INTO events (run_id, name, key, payload, created_at)
    SELECT parent_id, %(event)s::text, %(event)s::text, ''::bytea, %(now)s::float8
    FROM finished WHERE parent_id IS NOT NULL
    ON CONFLICT DO NOTHING
), woken AS (
    UPDATE runs AS parent SET wake_at = 0, updated_at = %(now)s
    FROM finished
    WHERE parent.run_id = finished.parent_id AND parent.status = 'waiting'
      AND strpos(parent.wait_events, chr(10) || %(event)s::text || chr(10)) > 0
)
SELECT undying_fence((SELECT count(*) FROM finished) = 1
                     AND (SELECT count(*) FROM written) = %(n)s),
       pg_notify('undying', %(token)s)

-- name: insert_child_event
-- The event a finished (or cancelled) child leaves for its parent; keyed, so stored once.
INSERT INTO events (run_id, name, key, payload, created_at)
SELECT parent_id, %(name)s::text, %(name)s::text, ''::bytea, %(now)s::float8
FROM runs WHERE run_id = %(child)s AND parent_id IS NOT NULL
ON CONFLICT DO NOTHING

-- name: wake_parent
UPDATE runs AS parent SET wake_at = 0, updated_at = %(now)s
FROM runs AS child
WHERE child.run_id = %(child)s AND parent.run_id = child.parent_id
  AND parent.status = 'waiting'
  AND strpos(parent.wait_events, chr(10) || %(name)s::text || chr(10)) > 0

-- name: send_event
-- One statement: the existence check, the keyed insert, the wake-up and the notification
-- commit together, and a repeated key changes nothing.
WITH target AS (
    SELECT run_id FROM runs WHERE run_id = %(run_id)s
), stored AS (
    INSERT INTO events (run_id, name, key, payload, created_at)
    SELECT run_id, %(name)s::text, %(key)s::text, %(payload)s::bytea, %(now)s::float8
    FROM target
    ON CONFLICT DO NOTHING
    RETURNING run_id
), woken AS (
    UPDATE runs SET wake_at = 0, updated_at = %(now)s::float8
    WHERE run_id IN (SELECT run_id FROM stored) AND status = 'waiting'
      AND strpos(wait_events, chr(10) || %(name)s::text || chr(10)) > 0
)
SELECT (SELECT count(*) FROM target),
       (SELECT count(*) FROM stored),
       (SELECT count(*) FROM (SELECT pg_notify('undying', %(token)s) FROM stored) AS sent)

-- name: suspend_run
-- Release the run with its wake conditions and last entries in one statement. A matching
-- event already stored makes it due at once (wake_at 0), and then other workers are told.
-- Fenced by `suspended`, as finish_run by `finished`.
WITH suspended AS (
    UPDATE runs SET status = 'waiting', owner = NULL, lease_expires = NULL,
        wait_events = %(key)s::text,
        wake_at = CASE WHEN cancel_requested OR EXISTS (
            SELECT 1 FROM events e WHERE e.run_id = runs.run_id AND e.consumed_seq IS NULL
              AND strpos(%(key)s::text, chr(10) || e.name || chr(10)) > 0) THEN 0
            ELSE %(wake_at)s::float8 END,
        updated_at = %(now)s
    WHERE run_id = %(run_id)s AND epoch = %(epoch)s
    RETURNING run_id, wake_at
), written AS (
    INSERT INTO journal (run_id, seq, kind, name, digest, status, attempt, started_at,
                         finished_at, payload)
    SELECT s.run_id, e.seq, e.kind, e.name, e.digest, e.status, e.attempt, e.started_at,
           e.finished_at, e.payload
    FROM suspended s,
         unnest(%(e_seq)s::integer[], %(e_kind)s::text[], %(e_name)s::text[], %(e_digest)s::bytea[],
                %(e_status)s::text[], %(e_attempt)s::integer[], %(e_started_at)s::float8[],
                %(e_finished_at)s::float8[], %(e_payload)s::bytea[])
           AS e (seq, kind, name, digest, status, attempt, started_at, finished_at, payload)
    ORDER BY e.seq
    ON CONFLICT (run_id, seq) DO UPDATE SET
        kind = excluded.kind, name = excluded.name, digest = excluded.digest,
        status = excluded.status, attempt = excluded.attempt, started_at = excluded.started_at,
        finished_at = excluded.finished_at, payload = excluded.payload
    WHERE journal.status IN ('intent', 'waiting')
    RETURNING seq
)
SELECT undying_fence((SELECT count(*) FROM suspended) = 1
                     AND (SELECT count(*) FROM written) = %(n)s),
       (SELECT count(*) FROM (SELECT pg_notify('undying', %(token)s) FROM suspended
                              WHERE wake_at <= %(now)s) AS sent)

-- name: release_runs
WITH released AS (
    UPDATE runs SET status = 'pending', owner = NULL, lease_expires = NULL, updated_at = %(now)s
    WHERE run_id = ANY(%(run_ids)s::text[]) AND owner = %(owner)s AND status = 'running'
    RETURNING run_id
)
SELECT pg_notify('undying', %(token)s) FROM released LIMIT 1

-- name: resume_run
WITH resumed AS (
    UPDATE runs SET status = 'pending', error = NULL, cancel_requested = FALSE, owner = NULL,
                    lease_expires = NULL, stalled_takeovers = 0, updated_at = %(now)s
    WHERE run_id = %(run_id)s AND status IN ('failed', 'cancelled')
    RETURNING run_id
)
SELECT pg_notify('undying', %(token)s) FROM resumed

-- name: set_status_value
-- Fenced by the UPDATE's own row lock and epoch re-check, as finish_run.
UPDATE runs SET status_value = %s, updated_at = %s WHERE run_id = %s AND epoch = %s

-- name: lock_queues
-- Per-queue claim locks, always taken in key order so two claimers never deadlock.
SELECT pg_advisory_xact_lock(1970168945, key)
FROM (SELECT DISTINCT hashtext(q) AS key FROM unnest(%s::text[]) AS q ORDER BY key) AS keys

-- name: claim_due
-- Every claim notes where the journal stands (progress_mark, from the run_progress view); a
-- claim that finds it moved since the last one resets the count of take-overs without
-- progress (see take_over).
UPDATE runs SET status = 'running', owner = %(owner)s, lease_expires = %(lease_expires)s,
                epoch = epoch + 1, wake_at = NULL, wait_events = NULL, updated_at = %(now)s,
    stalled_takeovers = CASE
        WHEN progress_mark = (SELECT mark FROM run_progress p WHERE p.run_id = runs.run_id)
        THEN stalled_takeovers ELSE 0 END,
    progress_mark = (SELECT mark FROM run_progress p WHERE p.run_id = runs.run_id)
WHERE run_id IN (
    SELECT run_id FROM runs
    WHERE (status = 'pending' OR (status = 'waiting' AND wake_at <= %(now)s))
      AND queue IS NULL  -- a queued run goes only to workers that know the queue's limits
    ORDER BY priority DESC, created_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED)
RETURNING run_id, workflow, status, input, epoch, owner, output, error, lease_expires, wake_at,
          cancel_requested, parent_id, queue, priority, deadline, status_value, generation,
          created_at, updated_at, stalled_takeovers, progress_mark

-- name: claim_queue
-- Notes the journal's progress like claim_due.
UPDATE runs SET status = 'running', owner = %(owner)s, lease_expires = %(lease_expires)s,
                epoch = epoch + 1, wake_at = NULL, wait_events = NULL, updated_at = %(now)s,
    stalled_takeovers = CASE
        WHEN progress_mark = (SELECT mark FROM run_progress p WHERE p.run_id = runs.run_id)
        THEN stalled_takeovers ELSE 0 END,
    progress_mark = (SELECT mark FROM run_progress p WHERE p.run_id = runs.run_id)
WHERE run_id IN (
    SELECT run_id FROM runs
    WHERE queue = %(queue)s
      AND (status = 'pending' OR (status = 'waiting' AND wake_at <= %(now)s))
    ORDER BY priority DESC, created_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED)
RETURNING run_id, workflow, status, input, epoch, owner, output, error, lease_expires, wake_at,
          cancel_requested, parent_id, queue, priority, deadline, status_value, generation,
          created_at, updated_at, stalled_takeovers, progress_mark

-- name: claim_queue_per_key
-- claim_queue for a queue with a per-key limit: a due run with a concurrency key is taken
-- only while its key has room, counting the key's runs running now and those before it in
-- this claim (row_number, in claim order). The claim holds the queue's advisory lock, so
-- no other worker claims from the queue meanwhile. Window functions cannot be locked with
-- FOR UPDATE, so the rows are locked by the query around them, which re-checks that each is
-- still due (a run cancelled since the snapshot is not claimed).
UPDATE runs SET status = 'running', owner = %(owner)s, lease_expires = %(lease_expires)s,
                epoch = epoch + 1, wake_at = NULL, wait_events = NULL, updated_at = %(now)s,
    stalled_takeovers = CASE
        WHEN progress_mark = (SELECT mark FROM run_progress p WHERE p.run_id = runs.run_id)
        THEN stalled_takeovers ELSE 0 END,
    progress_mark = (SELECT mark FROM run_progress p WHERE p.run_id = runs.run_id)
WHERE run_id IN (
    SELECT run_id FROM runs
    WHERE (status = 'pending' OR (status = 'waiting' AND wake_at <= %(now)s))
      AND run_id IN (
        SELECT run_id FROM (
            SELECT run_id, concurrency_key,
                   row_number() OVER (PARTITION BY concurrency_key
                                      ORDER BY priority DESC, created_at) AS nth
            FROM runs
            WHERE queue = %(queue)s
              AND (status = 'pending' OR (status = 'waiting' AND wake_at <= %(now)s))
        ) AS due
        WHERE concurrency_key IS NULL
           OR nth + (SELECT count(*) FROM runs AS busy
                     WHERE busy.queue = %(queue)s AND busy.status = 'running'
                       AND busy.concurrency_key = due.concurrency_key) <= %(per_key)s)
    ORDER BY priority DESC, created_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED)
RETURNING run_id, workflow, status, input, epoch, owner, output, error, lease_expires, wake_at,
          cancel_requested, parent_id, queue, priority, deadline, status_value, generation,
          created_at, updated_at, stalled_takeovers, progress_mark

-- name: count_queue_running
SELECT count(*) FROM runs WHERE queue = %s AND status = 'running'

-- name: count_queue_started_since
SELECT count(*) FROM queue_starts WHERE queue = %s AND started_at > %s

-- name: prune_queue_starts
DELETE FROM queue_starts WHERE queue = %s AND started_at <= %s

-- name: record_queue_starts
INSERT INTO queue_starts (queue, started_at)
SELECT %s::text, %s::float8 FROM generate_series(1, %s::integer)

-- name: probe_dead_owners
-- An owner is dead when its session advisory lock is free: take it, and give it back at once.
WITH probe AS MATERIALIZED (
    SELECT owner, pg_try_advisory_lock(hashtextextended(owner, 0)) AS free
    FROM (SELECT DISTINCT owner FROM runs
          WHERE status = 'running' AND owner IS NOT NULL AND owner <> %(me)s
            AND owner <> ALL(%(known)s::text[])) AS owners
)
SELECT owner, pg_advisory_unlock(hashtextextended(owner, 0)) FROM probe WHERE free

-- name: take_over
-- A take-over that finds the journal where the last claim left it counts one more take-over
-- without progress (the last owner died, or stopped renewing its lease, journaling nothing);
-- progress resets the count. The worker quarantines a run whose count passes
-- App(max_takeovers_without_progress=...).
UPDATE runs SET owner = %(owner)s, lease_expires = %(lease_expires)s, epoch = epoch + 1,
                updated_at = %(now)s,
    stalled_takeovers = CASE
        WHEN progress_mark = (SELECT mark FROM run_progress p WHERE p.run_id = runs.run_id)
        THEN stalled_takeovers + 1 ELSE 0 END,
    progress_mark = (SELECT mark FROM run_progress p WHERE p.run_id = runs.run_id)
WHERE run_id IN (
    SELECT run_id FROM runs
    WHERE status = 'running'
      AND (lease_expires < %(now)s OR owner = ANY(%(dead)s::text[]))
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED)
RETURNING run_id, workflow, status, input, epoch, owner, output, error, lease_expires, wake_at,
          cancel_requested, parent_id, queue, priority, deadline, status_value, generation,
          created_at, updated_at, stalled_takeovers, progress_mark

-- name: heartbeat
WITH extended AS (
    UPDATE runs SET lease_expires = %s
    WHERE owner = %s AND status = 'running' AND run_id = ANY(%s::text[])
    RETURNING run_id, cancel_requested
)
SELECT run_id FROM extended WHERE cancel_requested

-- name: cancelled_owned
SELECT run_id FROM runs WHERE owner = %s AND status = 'running' AND cancel_requested

-- name: next_wake_at
SELECT min(wake_at) FROM runs WHERE status = 'waiting' AND wake_at IS NOT NULL

-- name: put_blobs
-- In hash order, so two writers storing overlapping chunks cannot deadlock on each other.
INSERT INTO blobs (hash, data, written_at)
SELECT hash, data, %s::float8 FROM unnest(%s::bytea[], %s::bytea[]) AS b (hash, data)
ORDER BY hash
ON CONFLICT (hash) DO UPDATE SET written_at = excluded.written_at

-- name: get_blobs
SELECT hash, data FROM blobs WHERE hash = ANY(%s::bytea[])

-- name: take_event
-- Consume the oldest open event and journal it (with its payload) in one statement.
-- No row back: no such event, nothing changed.
WITH event AS (
    SELECT id, payload FROM events
    WHERE run_id = %(run_id)s AND name = %(event)s AND consumed_seq IS NULL
    ORDER BY id LIMIT 1
    FOR UPDATE
), written AS (
    INSERT INTO journal (run_id, seq, kind, name, digest, status, attempt, started_at,
                         finished_at, payload)
    SELECT r.run_id, %(e_seq)s::integer, %(e_kind)s::text, %(e_name)s::text,
           %(e_digest)s::bytea, %(e_status)s::text, %(e_attempt)s::integer,
           %(e_started_at)s::float8, %(e_finished_at)s::float8, event.payload
    FROM runs r, event
    WHERE r.run_id = %(run_id)s AND r.epoch = %(epoch)s
    FOR SHARE OF r
    ON CONFLICT (run_id, seq) DO UPDATE SET
        kind = excluded.kind, name = excluded.name, digest = excluded.digest,
        status = excluded.status, attempt = excluded.attempt, started_at = excluded.started_at,
        finished_at = excluded.finished_at, payload = excluded.payload
    WHERE journal.status IN ('intent', 'waiting')
    RETURNING seq
), consumed AS (
    UPDATE events SET consumed_seq = %(e_seq)s WHERE id IN (SELECT id FROM event)
)
SELECT payload, undying_fence((SELECT count(*) FROM written) = 1) FROM event

-- name: run_tree
WITH RECURSIVE tree (run_id) AS (
    SELECT run_id FROM runs WHERE run_id = %s
    UNION
    SELECT r.run_id FROM runs r JOIN tree t ON r.parent_id = t.run_id
)
SELECT r.run_id, r.status FROM runs r JOIN tree t ON r.run_id = t.run_id

-- name: cancel_idle
UPDATE runs SET status = 'cancelled', error = %s, cancel_requested = TRUE, owner = NULL,
                wake_at = NULL, wait_events = NULL, updated_at = %s
WHERE run_id = %s AND status IN ('pending', 'waiting')
RETURNING run_id

-- name: flag_cancel
UPDATE runs SET cancel_requested = TRUE, updated_at = %s
WHERE run_id = %s AND status = 'running'

-- name: copy_journal
INSERT INTO journal (run_id, seq, kind, name, digest, status, attempt, started_at,
                     finished_at, payload)
SELECT %s::text, seq, kind, name, digest, status, attempt, started_at, finished_at, payload
FROM journal WHERE run_id = %s AND seq < %s AND status IN ('ok', 'error')

-- name: load_state
SELECT payload FROM journal
WHERE run_id = %s AND kind = 'state' AND name = %s AND seq < %s AND status = 'ok'
ORDER BY seq DESC LIMIT 1

-- name: delete_finished_runs
-- Ended top-level runs with all their descendants, journals, events and lineage, at once.
WITH RECURSIVE tree (run_id) AS (
    SELECT run_id FROM runs
    WHERE status IN ('completed', 'failed', 'cancelled') AND updated_at < %(older_than)s
      AND parent_id IS NULL
    UNION
    SELECT r.run_id FROM runs r JOIN tree t ON r.parent_id = t.run_id
), journals AS (
    DELETE FROM journal WHERE run_id IN (SELECT run_id FROM tree)
), events_gone AS (
    DELETE FROM events WHERE run_id IN (SELECT run_id FROM tree)
), lineage_gone AS (
    DELETE FROM lineage WHERE run_id IN (SELECT run_id FROM tree)
), usage_gone AS (
    DELETE FROM usage WHERE run_id IN (SELECT run_id FROM tree)
), streams_gone AS (
    DELETE FROM streams WHERE run_id IN (SELECT run_id FROM tree)
), stream_items_gone AS (
    DELETE FROM stream_items WHERE run_id IN (SELECT run_id FROM tree)
), dedup_gone AS (
    -- the keys of deleted runs, and keys that expired before the cut-off
    DELETE FROM dedup_keys WHERE run_id IN (SELECT run_id FROM tree) OR expires_at < %(older_than)s
)
DELETE FROM runs WHERE run_id IN (SELECT run_id FROM tree)

-- name: ref_payloads
-- Chunk references start with the byte 0x10 (undying.payloads.REF_MARK).
SELECT payload FROM journal WHERE substring(payload FROM 1 FOR 1) = '\x10'::bytea

-- name: blob_hashes
SELECT hash FROM blobs WHERE written_at < %s

-- name: lock_run_epoch
-- ctx.transaction's fence: held until its COMMIT, so the transaction's effects and its
-- journal entry commit under the epoch they were checked at.
SELECT 1 FROM runs WHERE run_id = %s AND epoch = %s FOR SHARE

-- name: delete_blobs
DELETE FROM blobs WHERE hash = ANY(%s::bytea[]) AND written_at < %s

-- name: continue_as_new
-- Archive the generation, clear the journal, start the next one (0 rows back: fenced out,
-- nothing changed). Fenced by `at_epoch`, which locks the run row at this epoch for the whole
-- statement (FOR NO KEY UPDATE, the lock the UPDATE below takes anyway), so a takeover
-- cannot commit between the archive and the renewal.
WITH at_epoch AS (
    SELECT run_id, generation, input FROM runs
    WHERE run_id = %(run_id)s AND epoch = %(epoch)s
    FOR NO KEY UPDATE
), archived AS (
    INSERT INTO lineage (run_id, generation, input, ended_at)
    SELECT run_id, generation, input, %(now)s::float8 FROM at_epoch
    RETURNING run_id
), cleared AS (
    DELETE FROM journal WHERE run_id IN (SELECT run_id FROM archived)
), renewed AS (
    UPDATE runs SET input = %(input)s, generation = generation + 1, status_value = NULL,
                    updated_at = %(now)s
    WHERE run_id IN (SELECT run_id FROM archived) AND epoch = %(epoch)s
)
SELECT run_id FROM archived

-- Read side (store.base.ReadSide: the CLI and the web UI). A filter left NULL matches all.

-- name: count_runs_by_status
SELECT status, count(*) FROM runs
WHERE (%(workflow)s::text IS NULL OR workflow = %(workflow)s::text)
  AND (%(parent_id)s::text IS NULL OR parent_id = %(parent_id)s::text)
  AND (%(created_after)s::float8 IS NULL OR created_at >= %(created_after)s::float8)
  AND (%(run_id_contains)s::text IS NULL OR strpos(run_id, %(run_id_contains)s::text) > 0)
GROUP BY status

-- name: list_workflows
SELECT DISTINCT workflow FROM runs ORDER BY workflow

-- name: list_events
SELECT name, key, payload, created_at, consumed_seq FROM events
WHERE run_id = %s ORDER BY id LIMIT %s

-- name: put_usage
INSERT INTO usage (run_id, generation, seq, epoch, attempt, kind, provider, model, outcome,
                   calls, input_tokens, output_tokens, cached_tokens, created_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
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
SELECT kind, outcome, provider, model, SUM(calls)::bigint AS calls,
       SUM(input_tokens)::bigint AS input_tokens, SUM(output_tokens)::bigint AS output_tokens,
       SUM(cached_tokens)::bigint AS cached_tokens
FROM usage WHERE run_id = %s
GROUP BY kind, outcome, provider, model
ORDER BY kind, provider, model, outcome

-- Durable streams (006_streams.sql).

-- name: append_stream
-- One statement, all or nothing: the fence (the run at this epoch, running, share-locked as
-- by every fenced write), the check that this append is not written already (a retry after a
-- lost acknowledgement), the marker of a step run again, the offsets (the upsert of the
-- stream's row, which waits for a concurrent append to the same stream and adds to its
-- length), the items, workflow code's journal entries and the notification. Returns (runs at
-- this epoch, their status, written already, appended) so the store can tell a refusal from
-- a repeat.
WITH run AS (
    SELECT run_id, status FROM runs
    WHERE run_id = %(run_id)s AND epoch = %(epoch)s
    FOR SHARE
), done AS (
    SELECT 1 FROM journal
    WHERE %(attempt)s::integer = 0 AND run_id = %(run_id)s AND seq = %(seq)s
      AND kind = %(kind)s AND name = %(stream)s AND status = 'ok'
    UNION ALL
    SELECT 1 FROM stream_items
    WHERE %(attempt)s::integer > 0 AND run_id = %(run_id)s AND stream = %(stream)s
      AND generation = %(generation)s AND seq = %(seq)s AND epoch = %(epoch)s
      AND attempt = %(attempt)s AND idx = %(first_idx)s AND attempt > 0
), go AS (
    SELECT run_id FROM run WHERE status = 'running' AND NOT EXISTS (SELECT 1 FROM done)
), voided AS (
    -- the values earlier attempts of the step left since its last marker (stream_discarded
    -- in the SQLite queries)
    SELECT count(*) AS n FROM stream_items
    WHERE %(marker)s::bytea IS NOT NULL AND run_id = %(run_id)s AND stream = %(stream)s
      AND generation = %(generation)s AND seq = %(seq)s AND attempt > 0 AND kind = 'value'
      AND (epoch, attempt) < (%(epoch)s::bigint, %(attempt)s::integer)
      AND stream_offset > coalesce((
          SELECT max(stream_offset) FROM stream_items
          WHERE run_id = %(run_id)s AND stream = %(stream)s AND generation = %(generation)s
            AND seq = %(seq)s AND attempt > 0 AND kind = 'retry'), -1)
), head AS (
    INSERT INTO streams (run_id, stream, length, closed_at, created_at, updated_at)
    SELECT go.run_id, %(stream)s::text, %(count)s::bigint + (voided.n > 0)::integer,
           %(closed_at)s::float8, %(now)s::float8, %(now)s::float8
    FROM go, voided
    ON CONFLICT (run_id, stream) DO UPDATE SET
        length = streams.length + excluded.length,
        closed_at = coalesce(streams.closed_at, excluded.closed_at),
        updated_at = excluded.updated_at
    WHERE streams.closed_at IS NULL OR excluded.length = 0
    RETURNING length
), marker AS (
    INSERT INTO stream_items (run_id, stream, stream_offset, kind, generation, seq, epoch,
                              attempt, idx, discarded, payload, created_at)
    SELECT %(run_id)s::text, %(stream)s::text, head.length - %(count)s::bigint - 1, 'retry',
           %(generation)s::integer, %(seq)s::integer, %(epoch)s::bigint, %(attempt)s::integer,
           -1, voided.n, %(marker)s::bytea, %(now)s::float8
    FROM head, voided WHERE voided.n > 0
), items AS (
    INSERT INTO stream_items (run_id, stream, stream_offset, kind, generation, seq, epoch,
                              attempt, idx, discarded, payload, created_at)
    SELECT %(run_id)s::text, %(stream)s::text, head.length - %(count)s::bigint + v.ord - 1,
           'value', %(generation)s::integer, %(seq)s::integer, %(epoch)s::bigint,
           %(attempt)s::integer, %(first_idx)s::integer + v.ord - 1, 0, v.payload,
           %(now)s::float8
    FROM head, unnest(%(payloads)s::bytea[]) WITH ORDINALITY AS v (payload, ord)
), written AS (
    INSERT INTO journal (run_id, seq, kind, name, digest, status, attempt, started_at,
                         finished_at, payload)
    SELECT %(run_id)s::text, e.seq, e.kind, e.name, e.digest, e.status, e.attempt,
           e.started_at, e.finished_at, e.payload
    FROM head,
         unnest(%(e_seq)s::integer[], %(e_kind)s::text[], %(e_name)s::text[], %(e_digest)s::bytea[],
                %(e_status)s::text[], %(e_attempt)s::integer[], %(e_started_at)s::float8[],
                %(e_finished_at)s::float8[], %(e_payload)s::bytea[])
           AS e (seq, kind, name, digest, status, attempt, started_at, finished_at, payload)
    ORDER BY e.seq
    ON CONFLICT (run_id, seq) DO UPDATE SET
        kind = excluded.kind, name = excluded.name, digest = excluded.digest,
        status = excluded.status, attempt = excluded.attempt, started_at = excluded.started_at,
        finished_at = excluded.finished_at, payload = excluded.payload
    WHERE journal.status IN ('intent', 'waiting')
    RETURNING seq
)
SELECT (SELECT count(*) FROM run), (SELECT status FROM run), (SELECT count(*) FROM done),
       (SELECT count(*) FROM head),
       undying_fence((SELECT count(*) FROM head) = 0
                     OR (SELECT count(*) FROM written) = %(n)s),
       (SELECT count(*) FROM (SELECT pg_notify('undying', %(note)s) FROM head) AS sent)

-- name: read_stream
-- One statement, one snapshot: the run's status, the stream's length and closing, and its
-- items from the offset (no row at all: no such run; one row of NULL items: none yet).
SELECT r.status AS run_status, h.length, h.closed_at, i.stream_offset, i.kind, i.payload,
       i.generation, i.seq, i.attempt, i.discarded, i.created_at
FROM runs r
LEFT JOIN streams h ON h.run_id = r.run_id AND h.stream = %(stream)s
LEFT JOIN LATERAL (
    SELECT * FROM stream_items
    WHERE run_id = r.run_id AND stream = %(stream)s AND stream_offset >= %(offset)s
    ORDER BY stream_offset LIMIT %(limit)s) i ON TRUE
WHERE r.run_id = %(run_id)s
ORDER BY i.stream_offset

-- name: list_streams
SELECT stream AS name, length, closed_at, created_at, updated_at FROM streams
WHERE run_id = %s ORDER BY created_at, stream

-- name: copy_streams
-- fork: what the source's current generation appended from positions below the fork point,
-- renumbered from 0 in each stream as generation 0 of the new run, and the new run's
-- streams: those it got items of and those its copied journal (copy_journal) closed.
WITH picked AS (
    SELECT i.*, row_number() OVER (PARTITION BY i.stream ORDER BY i.stream_offset) - 1 AS fresh
    FROM stream_items i JOIN runs r ON r.run_id = i.run_id AND r.generation = i.generation
    WHERE i.run_id = %(src)s AND i.seq < %(before)s
), copied AS (
    INSERT INTO stream_items (run_id, stream, stream_offset, kind, generation, seq, epoch,
                              attempt, idx, discarded, payload, created_at)
    SELECT %(dst)s::text, stream, fresh, kind, 0, seq, epoch, attempt, idx, discarded, payload,
           created_at
    FROM picked
    RETURNING 1
), heads AS (
    INSERT INTO streams (run_id, stream, length, closed_at, created_at, updated_at)
    SELECT %(dst)s::text, stream, sum(items), max(closed_at), min(created_at), max(created_at)
    FROM (SELECT stream, 1 AS items, NULL::float8 AS closed_at, created_at FROM picked
          UNION ALL
          SELECT name, 0, finished_at, finished_at FROM journal
          WHERE run_id = %(dst)s AND kind = 'close_stream' AND status = 'ok') AS s
    GROUP BY stream
)
SELECT count(*) FROM copied
-- Schedules (store.base.Schedules; the ticker fires them, pause/resume is Control's).

-- name: register_schedule
-- A schedule's definition is its code's (the latest worker to start with it wins); its state
-- (paused, last_tick, resumed_at) is never touched here.
INSERT INTO schedules (name, workflow, cron, every, timezone, missed, max_catch_up,
                       created_at, updated_at)
VALUES (%(name)s, %(workflow)s, %(cron)s, %(every)s, %(timezone)s, %(missed)s,
        %(max_catch_up)s, %(now)s, %(now)s)
ON CONFLICT (name) DO UPDATE SET
    workflow = excluded.workflow, cron = excluded.cron, every = excluded.every,
    timezone = excluded.timezone, missed = excluded.missed,
    max_catch_up = excluded.max_catch_up, updated_at = excluded.updated_at

-- name: list_schedules
SELECT name, workflow, cron, every, timezone, missed, max_catch_up, paused, last_tick,
       resumed_at, created_at, updated_at
FROM schedules ORDER BY name

-- name: fire_tick
-- One statement: lock the schedule row while it may fire this tick (a pause committing
-- meanwhile is waited for and re-checked), note the tick, create its run unless it exists,
-- and tell other workers about a run nobody claimed yet.
WITH due AS (
    SELECT name FROM schedules
    WHERE name = %(name)s AND NOT paused
      AND (resumed_at IS NULL OR resumed_at < %(tick)s::float8)
    FOR NO KEY UPDATE
), marked AS (
    UPDATE schedules SET last_tick = greatest(coalesce(last_tick, %(tick)s::float8),
                                              %(tick)s::float8)
    WHERE name IN (SELECT name FROM due)
), created AS (
    INSERT INTO runs (run_id, workflow, status, input, owner, lease_expires, epoch, queue,
                      priority, created_at, updated_at)
    SELECT %(run_id)s::text, %(workflow)s::text, %(status)s::text, %(input)s::bytea,
           %(owner)s::text, %(lease_expires)s::float8, %(epoch)s::bigint, %(queue)s::text,
           %(priority)s::integer, %(now)s::float8, %(now)s::float8
    FROM due
    ON CONFLICT (run_id) DO NOTHING
    RETURNING run_id, workflow, status, input, epoch, owner, output, error, lease_expires,
              wake_at, cancel_requested, parent_id, queue, priority, deadline, status_value,
              generation, created_at, updated_at, stalled_takeovers, progress_mark
), notified AS (
    SELECT pg_notify('undying', %(token)s) FROM created WHERE owner IS NULL
)
SELECT * FROM created WHERE (SELECT count(*) FROM notified) >= 0

-- name: pause_schedule
-- A resume notes its time: ticks that came due while paused never run. Returns whether the
-- schedule exists and whether it changed.
WITH target AS (
    SELECT name FROM schedules WHERE name = %(name)s
), changed AS (
    UPDATE schedules SET paused = %(paused)s, updated_at = %(now)s,
        resumed_at = CASE WHEN %(paused)s THEN resumed_at ELSE %(now)s END
    WHERE name = %(name)s AND paused <> %(paused)s
    RETURNING name
)
SELECT (SELECT count(*) FROM target), (SELECT count(*) FROM changed)
