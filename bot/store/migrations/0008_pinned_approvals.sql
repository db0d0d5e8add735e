-- What a card showed when it was approved (the resolved target version; for a restore the backup's
-- name, size and mtime), so the run uses exactly that or refuses.
ALTER TABLE pending_rollbacks ADD COLUMN pinned jsonb;
