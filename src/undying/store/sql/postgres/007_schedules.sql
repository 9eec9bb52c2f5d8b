-- Schedules, per-key concurrency and deduplicated starts (PostgreSQL); see the SQLite
-- migration 008_schedules.sql for what each part is for.

ALTER TABLE runs ADD COLUMN concurrency_key TEXT;
CREATE INDEX runs_running_keys ON runs (queue, concurrency_key)
    WHERE concurrency_key IS NOT NULL AND status = 'running';

CREATE TABLE dedup_keys (
    workflow   TEXT NOT NULL,
    key        TEXT NOT NULL,
    run_id     TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (workflow, key)
);
CREATE INDEX dedup_keys_run ON dedup_keys (run_id);

CREATE TABLE schedules (
    name         TEXT PRIMARY KEY,
    workflow     TEXT NOT NULL,
    cron         TEXT,
    every        DOUBLE PRECISION,
    timezone     TEXT,
    missed       TEXT NOT NULL,
    max_catch_up INTEGER,
    paused       BOOLEAN NOT NULL DEFAULT FALSE,
    last_tick    DOUBLE PRECISION,
    resumed_at   DOUBLE PRECISION,
    created_at   DOUBLE PRECISION NOT NULL,
    updated_at   DOUBLE PRECISION NOT NULL
);
