-- Runs, their steps, and the audit log of everything rollbot sent to a host or refused.
CREATE TABLE runs (
    id            bigserial PRIMARY KEY,
    environment   text        NOT NULL,
    procedure     text        NOT NULL,
    state         text        NOT NULL,
    requested_by  text        NOT NULL,
    approved_by   text[]      NOT NULL DEFAULT '{}',
    reason        text        NOT NULL DEFAULT '',
    from_version  text,
    to_version    text,
    backup        text,
    checks        jsonb       NOT NULL DEFAULT '[]',
    host_state    text        NOT NULL DEFAULT '',
    message       text        NOT NULL DEFAULT '',
    owner         text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    heartbeat_at  timestamptz NOT NULL DEFAULT now()
);

-- At most one active run per environment, enforced here rather than trusted to the application.
CREATE UNIQUE INDEX runs_one_active_per_environment
    ON runs (environment) WHERE state IN ('preflight', 'running');
CREATE INDEX runs_created_at ON runs (created_at DESC);

CREATE TABLE run_steps (
    run_id       bigint      NOT NULL REFERENCES runs (id),
    position     int         NOT NULL,
    key          text        NOT NULL,
    title        text        NOT NULL,
    destructive  boolean     NOT NULL,
    state        text        NOT NULL,
    started_at   timestamptz,
    finished_at  timestamptz,
    summary      text        NOT NULL DEFAULT '',
    output_tail  text        NOT NULL DEFAULT '',
    error        text        NOT NULL DEFAULT '',
    host_state   text        NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, position)
);

CREATE TABLE audit_log (
    id           bigserial PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    run_id       bigint REFERENCES runs (id),
    environment  text        NOT NULL,
    actor        text        NOT NULL,
    kind         text        NOT NULL,  -- command | file | refusal | run | plan
    host         text        NOT NULL DEFAULT '',
    command      text        NOT NULL DEFAULT '',
    exit_status  int,
    duration_ms  int,
    detail       text        NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_run ON audit_log (run_id, id);
