-- Who looks at rollbot's App Home, and when it was last published to them. Every replica reads
-- the dashboard's fingerprint and claims the viewers whose view is out of date with one
-- conditional UPDATE: at most one publish per user every 2 s across replicas, and only to those
-- who opened the tab within the last hour.
CREATE TABLE home_viewers (
    user_id       text        PRIMARY KEY,
    opened_at     timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz,
    fingerprint   text          -- the state last published to them (NULL: publish again)
);
CREATE INDEX home_viewers_recent ON home_viewers (opened_at);
