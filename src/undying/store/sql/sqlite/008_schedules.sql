-- Schedules, per-key concurrency and deduplicated starts (SQLite).

-- Per-key concurrency: runs of a queue started with the same concurrency_key share the
-- queue's per_key_concurrency limit (claim_queue_per_key counts those running). The index
-- holds only the keyed runs that are running, so other runs pay nothing to keep it.
ALTER TABLE runs ADD COLUMN concurrency_key TEXT;
CREATE INDEX runs_running_keys ON runs (queue, concurrency_key)
    WHERE concurrency_key IS NOT NULL AND status = 'running';

-- Deduplicated starts: while a key is held (expires_at in the future), a start of the
-- workflow with the same key returns the holder instead of creating a run. One row per
-- (workflow, key): a start after the window takes the row over for its own run.
CREATE TABLE dedup_keys (
    workflow   TEXT NOT NULL,
    key        TEXT NOT NULL,
    run_id     TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (workflow, key)
) WITHOUT ROWID;
CREATE INDEX dedup_keys_run ON dedup_keys (run_id);

-- Schedules: the definition every worker that knows a schedule writes at start, and the
-- state ticks and pause/resume change. A tick's run id derives from the schedule's name and
-- the tick, so creating it is idempotent whichever workers fire it; last_tick is the latest
-- tick fired (what a worker starting after an outage counts missed ticks from).
CREATE TABLE schedules (
    name         TEXT PRIMARY KEY,
    workflow     TEXT NOT NULL,
    cron         TEXT,                   -- a cron expression, or NULL for an interval
    every        REAL,                   -- seconds between ticks, for an interval
    timezone     TEXT,                   -- the cron expression's zone
    missed       TEXT NOT NULL,          -- skip latest catch_up: ticks missed while no worker ran
    max_catch_up INTEGER,                -- catch_up: at most this many missed ticks run
    paused       INTEGER NOT NULL DEFAULT 0,
    last_tick    REAL,
    resumed_at   REAL,                   -- ticks at or before the last resume never run
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL
);
