"""Message metadata on what a run announces, for other apps and workflows: pure functions.

The stakeholder notice carries ``rollback_completed`` (a run that succeeded) or
``rollback_failed`` (failed, cancelled, restore recommended, interrupted), each verification
status line ``rollback_verified``. The ``event_payload`` is flat and typed as Slack wants it
(strings, integers, booleans): a key whose value is unknown (a version pre-flight never read, a
run with no live message) is left out rather than sent as null, which Slack does not type.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from bot.model import RunRecord, RunStatus, VerificationResult

Metadata = dict[str, Any]  # {"event_type": str, "event_payload": {str: str | int | bool}}
Payload = dict[str, str | int | bool]
# Slack's errors for metadata it refuses: the message is then sent without it, never lost.
METADATA_ERRORS = frozenset({"invalid_metadata_format", "invalid_metadata_schema",
                             "metadata_too_large"})


class MessageEvent(StrEnum):
    """The ``event_type`` of rollbot's message metadata (declared in the app manifest)."""

    COMPLETED = "rollback_completed"
    FAILED = "rollback_failed"
    VERIFIED = "rollback_verified"


def run_payload(run: RunRecord) -> Payload:
    """What every event says about its run."""
    payload: Payload = {
        "run_id": run.id,
        "environment": run.environment,
        "procedure": run.procedure.value,
        "outcome": run.status.value,
    }
    optional = {"from_version": run.from_version, "to_version": run.to_version,
                "live_message_url": run.live_message_url}
    payload.update({key: value for key, value in optional.items() if value})
    return payload


def notice_metadata(run: RunRecord) -> Metadata:
    """The notice's metadata: completed when the run succeeded, failed otherwise."""
    event = MessageEvent.COMPLETED if run.status is RunStatus.SUCCEEDED else MessageEvent.FAILED
    return {"event_type": event.value, "event_payload": run_payload(run)}


def verification_metadata(run: RunRecord, result: VerificationResult) -> Metadata:
    """A verification status line's metadata: the run, the tier and what the check found."""
    failed = sum(1 for item in result.items if not item.ok)
    payload = run_payload(run)
    payload.update(tier=result.tier.value, result="passed" if result.ok else "failed",
                   checks=len(result.items), checks_failed=failed)
    return {"event_type": MessageEvent.VERIFIED.value, "event_payload": payload}
