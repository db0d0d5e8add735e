-- Rollbacks proposed but not started yet: the confirmation and the two-person rule live here, so
-- double clicks, retries and two processes cannot start a run twice (conditional state changes).
CREATE TABLE pending_rollbacks (
    id            text        PRIMARY KEY,
    environment   text        NOT NULL,
    procedure     text        NOT NULL,
    target        text,
    backup        text,
    reason        text        NOT NULL DEFAULT '',
    requested_by  text        NOT NULL,
    state         text        NOT NULL,
    confirmed_by  text,
    approved_by   text,
    cancelled_by  text,
    run_id        bigint REFERENCES runs (id),
    front_ref     jsonb       NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE runs ADD COLUMN cancel_requested_by text;

-- The stakeholder notice of a run, and its fix ETA.
CREATE TABLE run_notices (
    run_id      bigint PRIMARY KEY REFERENCES runs (id),
    front_ref   jsonb       NOT NULL DEFAULT '{}',
    eta         text        NOT NULL DEFAULT 'TBD',
    eta_set_by  text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
