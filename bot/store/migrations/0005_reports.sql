-- The spec's Rollback Report of each run, as last written (also on disk in incident_logs_dir).
CREATE TABLE run_reports (
    run_id     bigint PRIMARY KEY REFERENCES runs (id),
    path       text        NOT NULL,
    markdown   text        NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
