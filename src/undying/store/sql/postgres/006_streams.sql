-- Durable streams (ctx.publish, app.read_stream): append-only, per run, read by offset.
-- The same tables as the SQLite schema (007_streams.sql explains them). Streams outlive
-- generations (continue_as_new keeps them) and go with their run (retention).

-- One row per stream. Its length hands out offsets: append_stream's upsert of this row locks
-- it and adds to the newest version, so appends to one stream, from any session, take
-- consecutive offsets in commit order.
CREATE TABLE streams (
    run_id     TEXT NOT NULL,
    stream     TEXT NOT NULL,
    length     BIGINT NOT NULL,
    closed_at  DOUBLE PRECISION,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (run_id, stream)
);

CREATE TABLE stream_items (
    run_id        TEXT NOT NULL,
    stream        TEXT NOT NULL,
    stream_offset BIGINT NOT NULL,   -- dense per stream: 0, 1, 2, ...
    kind          TEXT NOT NULL,     -- value retry
    generation    INTEGER NOT NULL,
    seq           INTEGER NOT NULL,
    epoch         BIGINT NOT NULL,   -- the execution that wrote it
    attempt       INTEGER NOT NULL,  -- 0: workflow code
    idx           INTEGER NOT NULL,  -- markers: -1
    discarded     INTEGER NOT NULL,  -- markers: values of the step's earlier attempts void
    payload       BYTEA,             -- a value's codec frame (inline, capped); a marker's step
    created_at    DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (run_id, stream, stream_offset)
);
-- Only steps' items need their origin looked up (a retried batch, a step's earlier attempts);
-- workflow code's publish is found by its journal entry, and skips this index. (On SQLite a
-- publish costs ~100 us, ~60 of them its COMMIT: the WAL pages of the stream row, the item and
-- the journal entry; bench/streams.py.)
CREATE UNIQUE INDEX stream_items_origin
    ON stream_items (run_id, stream, generation, seq, epoch, attempt, idx) WHERE attempt > 0;
