"""The Slack front: parses, acknowledges and renders; drives the engine in ``bot``."""
