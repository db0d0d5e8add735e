-- Signed events out (bot/notify/): one row per event and webhook, written when the event happens
-- and delivered by whichever rollbot process claims it first (lease_holder, lease_until; claimed
-- with FOR UPDATE SKIP LOCKED), retried on errors until it is delivered or given up.
CREATE TABLE notify_outbox (
    id bigserial PRIMARY KEY,
    event_id text NOT NULL,          -- the body's "id": one per event, the same for every webhook
    event text NOT NULL,
    dedupe_key text NOT NULL,        -- one per happening: the event is written once per webhook
    url text NOT NULL,
    environment text NOT NULL,
    run_id bigint,
    payload jsonb NOT NULL,          -- the body without sent_at
    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'gave_up')),
    attempts int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_holder text,
    lease_until timestamptz,
    last_status int,
    last_error text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    UNIQUE (dedupe_key, url)
);
CREATE INDEX notify_outbox_due ON notify_outbox (next_attempt_at) WHERE state = 'pending';
