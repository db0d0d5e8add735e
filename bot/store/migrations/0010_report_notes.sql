-- What people add to the Rollback Report: Impact and Root Cause (Slack's Edit report modal or
-- `rollbot report RUN --impact … --root-cause …`), with who wrote them last and when.
CREATE TABLE report_notes (
    run_id      bigint      PRIMARY KEY REFERENCES runs (id),
    impact      text        NOT NULL DEFAULT '',
    root_cause  text        NOT NULL DEFAULT '',
    updated_by  text        NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Every Healthy / Regressed answer to a verification announcement, with who and when: several
-- people may answer, and on-demand checks (check_id NULL) are answered too.
CREATE TABLE verification_verdicts (
    id        bigserial   PRIMARY KEY,
    run_id    bigint      NOT NULL REFERENCES runs (id),
    check_id  bigint      REFERENCES verification_checks (id),
    tier      text        NOT NULL,
    verdict   text        NOT NULL,  -- healthy | regressed
    given_by  text        NOT NULL,
    given_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX verification_verdicts_run ON verification_verdicts (run_id, given_at);
ALTER TABLE verification_checks ADD COLUMN verdict_at timestamptz;

-- The report is written once per change (the run, each check, each edit, each verdict):
-- the revision counts those writes.
ALTER TABLE run_reports ADD COLUMN revision int NOT NULL DEFAULT 1;
