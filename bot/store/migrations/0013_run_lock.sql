-- The run lock is a session-level advisory lock (bot/store/run_lock.py); the run row stays the
-- record of who holds it. A run whose process died is marked interrupted at once by the next
-- rollback or by any `rollbot serve` (its lock is free), and each such finding is told once.
CREATE TABLE run_interruptions (
    run_id        bigint PRIMARY KEY REFERENCES runs (id),
    environment   text        NOT NULL,
    host_state    text        NOT NULL,   -- the last host state the dead run recorded
    found_by      text        NOT NULL,   -- the rollbot process that noticed (host:pid)
    found_at      timestamptz NOT NULL DEFAULT now(),
    announced_by  text,                   -- the replica that told the front (once)
    announced_at  timestamptz
);
CREATE INDEX run_interruptions_untold ON run_interruptions (found_at) WHERE announced_at IS NULL;

-- What the run's steps learned (RunFacts: the compose file copy, the safety backup…), kept after
-- each step so a Resume or Put back can be offered even when the process that knew them died.
ALTER TABLE runs ADD COLUMN facts jsonb;

-- Runs that hold the session lock. A run started by an older rollbot (a rolling upgrade) holds
-- none: its free lock proves nothing, so only its heartbeat going quiet (60 s) counts for it.
ALTER TABLE runs ADD COLUMN holds_session_lock boolean NOT NULL DEFAULT false;

-- Otherwise heartbeat_at no longer decides anything (the lock does); it is kept as the run's last
-- sign of life, which the interruption message shows.
