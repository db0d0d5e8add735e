"""Fleets: a rollback walked over several hosts, the canary first, then batches in parallel."""
