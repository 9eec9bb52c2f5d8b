-- Token usage of model calls (undying.llm), one row per provider call attempt ('spent') and
-- one per burst of calls that replay answered from the journal ('saved'). Written unfenced:
-- tokens a worker spent before it lost its lease were spent all the same.
CREATE TABLE usage (
    run_id        TEXT NOT NULL,
    generation    INTEGER NOT NULL,
    seq           INTEGER NOT NULL,   -- journal position of the call (first of a saved burst)
    epoch         INTEGER NOT NULL,   -- the execution that wrote the row
    attempt       INTEGER NOT NULL,   -- 0 for saved rows
    kind          TEXT NOT NULL,      -- spent saved
    provider      TEXT NOT NULL,
    model         TEXT NOT NULL,
    outcome       TEXT NOT NULL,      -- ok error cut open (an attempt still streaming) saved
    calls         INTEGER NOT NULL,
    input_tokens  INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    created_at    REAL NOT NULL,
    PRIMARY KEY (run_id, generation, seq, epoch, attempt, kind, provider, model)
) WITHOUT ROWID;
