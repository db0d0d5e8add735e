-- The spec's Rollback Checklist per run: what rollbot did (ticked automatically) and what people
-- ticked, with who and when. Kept here so it survives restarts.
CREATE TABLE checklist_ticks (
    run_id    bigint      NOT NULL REFERENCES runs (id),
    key       text        NOT NULL,
    done_by   text        NOT NULL,
    done_at   timestamptz NOT NULL DEFAULT now(),
    automatic boolean     NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE TABLE checklist_messages (
    run_id    bigint PRIMARY KEY REFERENCES runs (id),
    front_ref jsonb  NOT NULL
);
