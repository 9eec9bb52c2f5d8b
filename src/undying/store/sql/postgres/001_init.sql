-- undying schema, version 1 (PostgreSQL).
-- The same tables and columns as the SQLite schema, so the contract suite reads the same
-- records from both. Times are epoch seconds (DOUBLE PRECISION), as the runtime passes them.

CREATE TABLE runs (
    run_id           TEXT PRIMARY KEY,
    workflow         TEXT NOT NULL,
    status           TEXT NOT NULL,          -- pending running waiting completed failed cancelled
    input            BYTEA NOT NULL,
    output           BYTEA,
    error            BYTEA,
    owner            TEXT,                   -- worker id holding the lease
    lease_expires    DOUBLE PRECISION,
    epoch            BIGINT NOT NULL DEFAULT 0,   -- fencing token, +1 at every claim
    wake_at          DOUBLE PRECISION,       -- waiting runs: when a timer fires
    wait_events      TEXT,                   -- waiting runs: '\n'-delimited event names
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    parent_id        TEXT,
    queue            TEXT,
    priority         INTEGER NOT NULL DEFAULT 0,
    deadline         DOUBLE PRECISION,
    status_value     BYTEA,
    generation       INTEGER NOT NULL DEFAULT 0,  -- continue_as_new count
    created_at       DOUBLE PRECISION NOT NULL,
    updated_at       DOUBLE PRECISION NOT NULL
);
CREATE INDEX runs_due ON runs (status, wake_at);
CREATE INDEX runs_pending ON runs (priority DESC, created_at) WHERE status = 'pending';
CREATE INDEX runs_owner ON runs (owner) WHERE owner IS NOT NULL;
CREATE INDEX runs_parent ON runs (parent_id) WHERE parent_id IS NOT NULL;

CREATE TABLE journal (
    run_id      TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    kind        TEXT NOT NULL,    -- step tx now random uuid sleep event call child patch
    name        TEXT NOT NULL,
    digest      BYTEA,            -- digest of the encoded arguments
    status      TEXT NOT NULL,    -- ok error intent waiting
    attempt     INTEGER NOT NULL,
    started_at  DOUBLE PRECISION NOT NULL,
    finished_at DOUBLE PRECISION,
    payload     BYTEA,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE events (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id       TEXT NOT NULL,
    name         TEXT NOT NULL,
    key          TEXT,
    payload      BYTEA NOT NULL,
    created_at   DOUBLE PRECISION NOT NULL,
    consumed_seq INTEGER
);
CREATE UNIQUE INDEX events_key ON events (run_id, key) WHERE key IS NOT NULL;
CREATE INDEX events_open ON events (run_id, name) WHERE consumed_seq IS NULL;

CREATE TABLE lineage (
    run_id     TEXT NOT NULL,
    generation INTEGER NOT NULL,
    input      BYTEA NOT NULL,
    ended_at   DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (run_id, generation)
);

CREATE TABLE blobs (
    hash       BYTEA PRIMARY KEY,
    data       BYTEA NOT NULL,
    written_at DOUBLE PRECISION NOT NULL  -- refreshed on every re-use: GC spares recent blobs
);

-- Raises (SQLSTATE UD001) unless ok: a statement that writes several rows for a run ends with
-- it, so a write the epoch fence refused, even partly, rolls back as a whole, in one round
-- trip. The store turns UD001 into LeaseLost.
CREATE FUNCTION undying_fence(ok boolean) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF ok IS NOT TRUE THEN
        RAISE EXCEPTION 'undying: a fenced write was refused' USING ERRCODE = 'UD001';
    END IF;
    RETURN TRUE;
END
$$;
