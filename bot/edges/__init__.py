"""The edges rollbot talks to production through: SSH, the Docker API, HTTP probes."""
