-- Runs cancelled after production was stopped: what they left behind, and the one choice a person
-- makes about it (Resume rollback, or Put back what ran before). The choice is one conditional
-- UPDATE (offered -> chosen), so double clicks and two people clicking start one action.
CREATE TABLE run_recoveries (
    run_id        bigint PRIMARY KEY REFERENCES runs (id),
    environment   text        NOT NULL,
    procedure     text        NOT NULL,   -- the procedure a Resume continues
    from_version  text        NOT NULL,   -- what ran before the rollback (what Put back restores)
    to_version    text        NOT NULL,   -- the rollback's target (what Resume finishes at)
    backup        text,                   -- restore: the backup the run was approved with,
    backup_size   bigint,                 -- and its size and time then (a changed file is refused)
    backup_modified timestamptz,
    done_steps    text[]      NOT NULL,   -- step keys done so far, over the run and its forerunners
    host_state    text        NOT NULL,
    facts         jsonb       NOT NULL DEFAULT '{}',  -- RunFacts: compose copy, safety backup…
    put_back_refusal text     NOT NULL DEFAULT '',    -- why Put back is not offered ('' = offered)
    state         text        NOT NULL DEFAULT 'offered',  -- offered | chosen | superseded
    choice        text,                   -- resume | put_back
    chosen_by     text,
    chosen_at     timestamptz,
    continuation  bigint REFERENCES runs (id),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX run_recoveries_offered ON run_recoveries (environment) WHERE state = 'offered';

-- A run that continues a cancelled one (Resume or Put back) names it.
ALTER TABLE runs ADD COLUMN continues_run bigint REFERENCES runs (id);
