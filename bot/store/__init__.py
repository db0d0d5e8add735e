"""rollbot's own records in PostgreSQL: runs, steps, audit; its migrations; the embedded server."""
