"""Signed events out: what rollbot tells status pages and paging tools, from a persistent outbox."""
