-- A deploy being watched or counted down is worked on by one rollbot replica: the holder of
-- its lease. The holder renews lease_until; when it passes (the holder died), any replica
-- takes the lease with one conditional UPDATE and carries on. lease_until NULL: released.
ALTER TABLE deploys ADD COLUMN lease_holder text;
ALTER TABLE deploys ADD COLUMN lease_until timestamptz;
-- When the watch ends, so that a replica taking it over watches only what is left of it.
ALTER TABLE deploys ADD COLUMN watch_until timestamptz;
CREATE INDEX deploys_leased ON deploys (lease_until) WHERE state IN ('watching', 'countdown');
