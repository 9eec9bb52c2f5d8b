-- A child run that ends tells its parent in the same statement: an event named
-- 'undying.child:<child id>' (see store.base.child_event_name), and a parent suspended on it
-- becomes due. As a trigger, finishing a run stays one UPDATE, and no code path that ends a
-- run (finish, cancel) can forget the parent.
CREATE TRIGGER runs_wake_parent AFTER UPDATE OF status ON runs
WHEN NEW.parent_id IS NOT NULL
 AND NEW.status IN ('completed', 'failed', 'cancelled')
 AND OLD.status NOT IN ('completed', 'failed', 'cancelled')
BEGIN
    INSERT OR IGNORE INTO events (run_id, name, key, payload, created_at)
    VALUES (NEW.parent_id, 'undying.child:' || NEW.run_id, 'undying.child:' || NEW.run_id,
            x'', NEW.updated_at);
    UPDATE runs SET wake_at = 0, updated_at = NEW.updated_at
    WHERE run_id = NEW.parent_id AND status = 'waiting'
      AND instr(wait_events, char(10) || 'undying.child:' || NEW.run_id || char(10)) > 0;
END;
