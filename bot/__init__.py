"""rollbot's engine: procedures, runs and hosts. Knows nothing about Slack."""
