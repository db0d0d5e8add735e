"""What each outgoing event says: pure builders from engine values to the signed JSON body.

A notice is built when its event happens and kept in the outbox as JSON; only ``sent_at`` (and
a run's live message link, when Slack recorded it after the event) is filled in at each attempt.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from bot.autorollback.deploys import Deploy
from bot.model import RunRecord, RunStatus, VerificationResult
from bot.notify.config import EventName

TEST_EVENT = "test"


@dataclass(frozen=True)
class RunFacts:
    """The ``run`` object of a body."""

    id: int
    from_version: str | None
    to_version: str | None
    procedure: str
    requested_by: str
    outcome: str          # running, succeeded, failed, cancelled, interrupted, …
    live_message_url: str | None


@dataclass(frozen=True)
class Notice:
    """One event, before it is written to the outbox (once per webhook that wants it)."""

    event: str
    # Unique per happening: the outbox keeps one row per (key, webhook), so a hook called twice
    # for one happening (two replicas, a retry) still sends it once.
    key: str
    environment: str
    run: RunFacts | None
    details: Mapping[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    occurred_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def payload(self) -> dict[str, Any]:
        """The body without ``sent_at`` (what the outbox stores)."""
        return {"id": self.id, "event": self.event, "occurred_at": _iso(self.occurred_at),
                "environment": self.environment,
                "run": asdict(self.run) if self.run is not None else None, **self.details}


def body(payload: Mapping[str, Any], *, sent_at: datetime,
         live_message_url: str | None = None) -> bytes:
    """The exact bytes POSTed (and signed) for one attempt."""
    run = payload.get("run")
    if isinstance(run, dict) and not run.get("live_message_url") and live_message_url:
        run = {**run, "live_message_url": live_message_url}
    ordered = {"event": payload["event"], "sent_at": _iso(sent_at), **payload, "run": run}
    return json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def run_facts(run: RunRecord, *, outcome: str | None = None) -> RunFacts:
    return RunFacts(id=run.id, from_version=run.from_version, to_version=run.to_version,
                    procedure=run.procedure.value, requested_by=run.requested_by,
                    outcome=outcome or run.status.value,
                    live_message_url=run.live_message_url)


def rollback_started(run: RunRecord) -> Notice:
    return Notice(event=EventName.ROLLBACK_STARTED, key=f"run:{run.id}:started",
                  environment=run.environment, run=run_facts(run, outcome="running"),
                  details={"reason": run.reason})


def rollback_ended(run: RunRecord) -> Notice | None:
    """``rollback.succeeded`` or ``rollback.failed``; None for a refusal (nothing started)."""
    if run.status is RunStatus.REFUSED:
        return None
    event = (EventName.ROLLBACK_SUCCEEDED if run.status is RunStatus.SUCCEEDED
             else EventName.ROLLBACK_FAILED)
    return Notice(event=event, key=f"run:{run.id}:ended", environment=run.environment,
                  run=run_facts(run),
                  details={"reason": run.reason, "host_state": run.host_state,
                           "message": run.message,
                           "finished_at": _iso(run.finished_at) if run.finished_at else None})


def verification_completed(result: VerificationResult, run: RunRecord) -> Notice:
    return Notice(
        event=EventName.VERIFICATION_COMPLETED,
        key=f"run:{run.id}:verify:{result.tier.value}:{_iso(result.due_at)}",
        environment=run.environment, run=run_facts(run),
        details={"verification": {
            "tier": result.tier.value, "ok": result.ok, "due_at": _iso(result.due_at),
            "ran_at": _iso(result.ran_at), "late_s": round(result.late_s, 1),
            "failed": [{"name": i.name, "detail": i.detail} for i in result.items if not i.ok],
            "checks": len(result.items)}})


def version_quarantined(run: RunRecord, version: str) -> Notice:
    return Notice(event=EventName.VERSION_QUARANTINED,
                  key=f"quarantine:{run.environment}:{version}:run:{run.id}",
                  environment=run.environment, run=run_facts(run),
                  details={"quarantine": {"version": version, "by": run.requested_by,
                                          "reason": run.reason or "rolled back"}})


def deploy_countdown(deploy: Deploy, triggers: Sequence[str], *, seconds: float) -> Notice:
    return Notice(event=EventName.DEPLOY_COUNTDOWN, key=f"deploy:{deploy.id}:countdown",
                  environment=deploy.environment, run=None,
                  details={"deploy": {"id": deploy.id, "version": deploy.version,
                                      "previous_version": deploy.previous_version,
                                      "stage": deploy.stage, "commit": deploy.commit,
                                      "actor": deploy.actor, "run_url": deploy.run_url},
                           "countdown": {"seconds": seconds, "triggers": list(triggers),
                                         "rolls_back_to": deploy.previous_version,
                                         "deadline": _iso(deploy.deadline)
                                         if deploy.deadline else None}})


def test_notice(environment: str, *, by: str) -> Notice:
    return Notice(event=TEST_EVENT, key=f"test:{uuid.uuid4()}", environment=environment,
                  run=None, details={"message": f"a test event sent by {by} with "
                                                "`rollbot notify test`; nothing happened"})
