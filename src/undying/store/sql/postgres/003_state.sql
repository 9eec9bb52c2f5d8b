-- Keyed run state (ctx.state): each write is a journal entry of kind 'state' named by its key;
-- this index finds the latest write of a key before a journal position without a scan.
CREATE INDEX journal_state ON journal (run_id, name, seq) WHERE kind = 'state';
