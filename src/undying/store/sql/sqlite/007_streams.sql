-- Durable streams (ctx.publish, app.read_stream): append-only, per run, read by offset.
-- Streams outlive generations (continue_as_new keeps them) and go with their run (retention).

-- One row per stream: its length (the next item's offset, handed out under the write lock
-- in commit order) and its closing by ctx.close_stream. A stream also ends when its run
-- ends; that is read from the run's status, not written here (see read_stream).
CREATE TABLE streams (
    run_id     TEXT NOT NULL,
    stream     TEXT NOT NULL,
    length     INTEGER NOT NULL,
    closed_at  REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (run_id, stream)
) WITHOUT ROWID;

-- The items, by offset. Each has an origin, unique in its stream: (generation, seq, epoch,
-- attempt, idx), where seq is the journal position of workflow code's publish (attempt 0)
-- or of the step that published (its attempt, and idx the value's place among that
-- attempt's), so a retried append writes nothing twice and a step run again can tell its
-- earlier attempts' values apart (the 'retry' marker).
CREATE TABLE stream_items (
    run_id        TEXT NOT NULL,
    stream        TEXT NOT NULL,
    stream_offset INTEGER NOT NULL,   -- dense per stream: 0, 1, 2, ...
    kind          TEXT NOT NULL,      -- value retry
    generation    INTEGER NOT NULL,
    seq           INTEGER NOT NULL,
    epoch         INTEGER NOT NULL,   -- the execution that wrote it
    attempt       INTEGER NOT NULL,   -- 0: workflow code
    idx           INTEGER NOT NULL,   -- markers: -1
    discarded     INTEGER NOT NULL,   -- markers: values of the step's earlier attempts void
    payload       BLOB,               -- a value's codec frame (inline, capped); a marker's step
    created_at    REAL NOT NULL,
    PRIMARY KEY (run_id, stream, stream_offset)
) WITHOUT ROWID;
-- Only steps' items need their origin looked up (a retried batch, a step's earlier attempts);
-- workflow code's publish is found by its journal entry, and skips this index. (On SQLite a
-- publish costs ~100 us, ~60 of them its COMMIT: the WAL pages of the stream row, the item and
-- the journal entry; bench/streams.py.)
CREATE UNIQUE INDEX stream_items_origin
    ON stream_items (run_id, stream, generation, seq, epoch, attempt, idx) WHERE attempt > 0;
