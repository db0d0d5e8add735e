"""The terminal front: the CLI and its rendering (the fallback when Slack is down)."""
