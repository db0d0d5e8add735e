"""rollbot's own schema, as numbered SQL files applied in order by bot/store/runs.py."""
