-- Signatures of Slack requests already taken: a request seen by any replica is refused by every
-- other. UNLOGGED: one cheap insert on the ack path, no WAL; rows matter for 10 minutes only, so
-- losing them in a crash (PostgreSQL truncates unlogged tables then) costs little.
CREATE UNLOGGED TABLE slack_replays (
    signature text        PRIMARY KEY,
    seen_at   timestamptz NOT NULL DEFAULT now()
);
