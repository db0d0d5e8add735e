-- Post-rollback verification checks (+5/+30/+120 min). The schedule lives here, not in memory:
-- after a restart every pending check is re-armed, and a claim (FOR UPDATE SKIP LOCKED) makes each
-- check run exactly once even with several rollbot processes on one database.
CREATE TABLE verification_checks (
    id           bigserial   PRIMARY KEY,
    run_id       bigint      NOT NULL REFERENCES runs (id),
    environment  text        NOT NULL,
    tier         text        NOT NULL,
    position     int         NOT NULL,
    due_at       timestamptz NOT NULL,
    state        text        NOT NULL DEFAULT 'pending',  -- pending | running | done | superseded
    claimed_by   text,
    claimed_at   timestamptz,
    ran_at       timestamptz,
    late_s       double precision,
    ok           boolean,
    items        jsonb       NOT NULL DEFAULT '[]',
    verdict      text,        -- a person's answer: healthy | regressed
    verdict_by   text,
    UNIQUE (run_id, position)
);
CREATE INDEX verification_due ON verification_checks (due_at) WHERE state = 'pending';

-- What the rollback left, to compare later checks with (row counts right after it).
ALTER TABLE runs ADD COLUMN baseline jsonb NOT NULL DEFAULT '{}';
