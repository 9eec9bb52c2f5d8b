-- undying schema, version 1 (SQLite).
-- One row per run; one row per journaled call; events; content-addressed payload blobs.

CREATE TABLE runs (
    run_id           TEXT PRIMARY KEY,
    workflow         TEXT NOT NULL,
    status           TEXT NOT NULL,          -- pending running waiting completed failed cancelled
    input            BLOB NOT NULL,
    output           BLOB,
    error            BLOB,
    owner            TEXT,                   -- worker id holding the lease
    lease_expires    REAL,
    epoch            INTEGER NOT NULL DEFAULT 0,  -- fencing token, +1 at every claim
    wake_at          REAL,                   -- waiting runs: when a timer fires
    wait_events      TEXT,                   -- waiting runs: '\n'-delimited event names
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    parent_id        TEXT,
    queue            TEXT,
    priority         INTEGER NOT NULL DEFAULT 0,
    deadline         REAL,
    status_value     BLOB,
    generation       INTEGER NOT NULL DEFAULT 0,  -- continue_as_new count
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL
);
-- One index serves claiming (pending, due waiting), take-over and heartbeats (running, then
-- owner). A separate owner index was measured to cost ~30 us on every start and finish.
CREATE INDEX runs_due ON runs (status, wake_at);
CREATE INDEX runs_parent ON runs (parent_id) WHERE parent_id IS NOT NULL;

CREATE TABLE journal (
    run_id      TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    kind        TEXT NOT NULL,    -- step tx now random uuid sleep event call child patch
    name        TEXT NOT NULL,
    digest      BLOB,             -- digest of the encoded arguments
    status      TEXT NOT NULL,    -- ok error intent waiting
    attempt     INTEGER NOT NULL,
    started_at  REAL NOT NULL,
    finished_at REAL,
    payload     BLOB,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;

CREATE TABLE events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id       TEXT NOT NULL,
    name         TEXT NOT NULL,
    key          TEXT,
    payload      BLOB NOT NULL,
    created_at   REAL NOT NULL,
    consumed_seq INTEGER
);
CREATE UNIQUE INDEX events_key ON events (run_id, key) WHERE key IS NOT NULL;
CREATE INDEX events_open ON events (run_id, name) WHERE consumed_seq IS NULL;

CREATE TABLE lineage (
    run_id     TEXT NOT NULL,
    generation INTEGER NOT NULL,
    input      BLOB NOT NULL,
    ended_at   REAL NOT NULL,
    PRIMARY KEY (run_id, generation)
) WITHOUT ROWID;

-- A rowid table, unlike journal: a WITHOUT ROWID row over ~1 KB spills into a 4 KB overflow
-- page, which would store every few-KB chunk at four times its size.
CREATE TABLE blobs (
    hash       BLOB PRIMARY KEY,
    data       BLOB NOT NULL,
    written_at REAL NOT NULL   -- refreshed on every re-use: GC spares blobs written recently
);
