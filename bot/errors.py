"""The exceptions rollbot raises, and what each means to the person on call.

Every lower-level error (asyncssh, asyncpg, httpx, aiodocker, OS errors) is translated at the edge
into one of these, so the fronts only ever show a ``RollbotError``'s message, which is written to be
read at 3 a.m. Every message (and a failed command's output tail) is passed through
``bot.redaction.redact`` when the error is made, so a password in a runbook command never reaches
a person, a log or the audit log through an error:

- ``RollbotError``: base class; ``str(err)`` is the sentence to show.
  - ``ConfigError``: the runbook or the environment is wrong; nothing has connected yet.
  - ``InvalidInput``: a value typed by a person (a version, a backup name, an environment) is not
    acceptable; nothing has run.
  - ``HostError``: talking to the production host failed.
    - ``HostKeyRejected``: the host's SSH key is unknown or changed; nothing was sent.
    - ``ConnectionLost``: the SSH connection could not be made or dropped.
    - ``CommandFailed``: a command exited non-zero (carries the exit status and the output tail).
    - ``CommandTimeout``: a command ran past its timeout and was killed on the host, or an SFTP
      read or write of a file did not finish in time.
  - ``PreflightTimeout``: pre-flight did not finish within its deadline; says which check it was
    still waiting for, on which host; nothing was changed.
  - ``ComposeEditError``: the compose file does not have the service or image line to change.
  - ``HealthCheckFailed``: the service did not become healthy, or reports the wrong version.
  - ``RunLocked``: another rollback is active in the environment (says who and since when).
  - ``StoreError``: the audit database is unreachable or refused a write.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bot.redaction import redact


class RollbotError(Exception):
    """Base of every error rollbot shows to a person."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))


class ConfigError(RollbotError):
    """The runbook file or the environment settings are invalid."""


class InvalidInput(RollbotError):
    """A value given by a person does not pass validation."""


class HostError(RollbotError):
    """Something went wrong talking to a production host."""


class HostKeyRejected(HostError):
    """The host presented an SSH key that is not in known_hosts."""


class ConnectionLost(HostError):
    """The SSH connection could not be opened, or it dropped."""


class CommandFailed(HostError):
    """A remote command exited with a non-zero status."""

    def __init__(self, message: str, *, exit_status: int | None, output_tail: str) -> None:
        super().__init__(message)
        self.exit_status = exit_status
        self.output_tail = redact(output_tail)


class CommandTimeout(HostError):
    """A remote command (or SFTP transfer) did not finish within its timeout; it was stopped."""


class PreflightTimeout(RollbotError):
    """Pre-flight ran past its deadline (``[timeouts] preflight_s``); nothing was changed."""


class ComposeEditError(RollbotError):
    """The compose file cannot be changed as asked."""


class HealthCheckFailed(RollbotError):
    """The service is not healthy or not on the expected version."""


class RunLocked(RollbotError):
    """Another rollback holds the environment's lock."""

    def __init__(self, *, environment: str, run_id: int, requested_by: str,
                 since: datetime, target: str) -> None:
        super().__init__(
            f"A rollback is already running in {environment}: run #{run_id} to {target}, "
            f"started by {requested_by} at {since:%Y-%m-%d %H:%M:%S %Z}. "
            "Wait for it to finish or cancel it first."
        )
        self.environment = environment
        self.run_id = run_id
        self.requested_by = requested_by
        self.since = since


class StoreError(RollbotError):
    """The audit database failed."""
