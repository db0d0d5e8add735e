-- What rollbot saw running, per environment and version (from every read of the compose
-- containers: pre-flights, runs, watches, `versions`). The deploy hook checks CI's
-- previous_version against it.
CREATE TABLE version_sightings (
    environment text        NOT NULL,
    version     text        NOT NULL,
    first_seen  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    seen_by     text        NOT NULL DEFAULT '',
    PRIMARY KEY (environment, version)
);
CREATE INDEX version_sightings_latest ON version_sightings (environment, last_seen DESC);
