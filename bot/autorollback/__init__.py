"""Automatic rollback after a CI deploy: the hook contract, the watch, countdown, quarantine."""
