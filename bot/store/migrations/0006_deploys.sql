-- Deploys announced by CI through the signed hook, and their watch / countdown state.
CREATE TABLE deploys (
    id               bigserial   PRIMARY KEY,
    environment      text        NOT NULL,
    version          text        NOT NULL,
    previous_version text        NOT NULL,
    stage            text        NOT NULL,
    commit           text        NOT NULL DEFAULT '',
    actor            text        NOT NULL DEFAULT '',
    run_url          text        NOT NULL DEFAULT '',
    state            text        NOT NULL,  -- watching | healthy | countdown | rolling_back |
                                            -- cancelled | interrupted | rolled_back | failed
    detail           text        NOT NULL DEFAULT '',
    deadline         timestamptz,
    decided_by       text,
    run_id           bigint REFERENCES runs (id),
    front_ref        jsonb       NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (environment, version, previous_version, stage, commit)
);

-- Versions that were rolled back: CI asks before deploying them again.
CREATE TABLE quarantine (
    environment text        NOT NULL,
    version     text        NOT NULL,
    by          text        NOT NULL,
    reason      text        NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    run_id      bigint REFERENCES runs (id),
    PRIMARY KEY (environment, version)
);
