-- Signatures of deploy-hook requests already taken: a replay is refused by every rollbot process.
CREATE TABLE hook_signatures (
    signature text        PRIMARY KEY,
    seen_at   timestamptz NOT NULL DEFAULT now()
);
