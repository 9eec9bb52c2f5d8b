-- Queue rate limits: one row per start of a run from a rate-limited queue.
CREATE TABLE queue_starts (
    queue      TEXT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX queue_starts_by_time ON queue_starts (queue, started_at);
