"""Proposed rollbacks waiting for confirmation, and the two-person rule for database restores.

Every state change is one conditional UPDATE, so double clicks, retried requests and two people
clicking at once move a proposal at most once: exactly one of them gets to start the run.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

import asyncpg

from bot.config import Runbook
from bot.errors import InvalidInput
from bot.model import ProcedureName, RollbackRequest
from bot.pinning import pinned_from_json, pinned_json
from bot.versions import parse_version


class PendingState(StrEnum):
    AWAITING_CONFIRMATION = "awaiting_confirmation"
    AWAITING_SECOND_APPROVAL = "awaiting_second_approval"
    STARTED = "started"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Pending:
    id: str
    request: RollbackRequest
    state: PendingState
    created_at: datetime
    expires_at: datetime
    confirmed_by: str | None
    approved_by: str | None
    cancelled_by: str | None
    run_id: int | None
    front_ref: dict[str, Any]

    def expired(self, now: datetime) -> bool:
        return now >= self.expires_at


@dataclass(frozen=True)
class Transition:
    """The result of a click: the proposal as it now is, and whether this click moved it."""

    pending: Pending
    moved: bool
    reason: str = ""   # why it did not move, for the person who clicked


class Approvals:
    """Pending rollbacks in PostgreSQL (the store's pool)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def propose(self, request: RollbackRequest, *, ttl: timedelta,
                      front_ref: dict[str, Any] | None = None) -> Pending:
        row = await self._pool.fetchrow(
            "INSERT INTO pending_rollbacks (id, environment, procedure, target, backup, reason,"
            " requested_by, state, front_ref, expires_at, pinned) VALUES ($1, $2, $3, $4, $5, $6,"
            " $7, 'awaiting_confirmation', $8::jsonb, now() + $9::interval, $10::jsonb)"
            " RETURNING *",
            secrets.token_hex(8), request.environment, request.procedure.value,
            str(request.target) if request.target else None, request.backup, request.reason,
            request.requested_by, json.dumps(front_ref or {}), ttl,
            json.dumps(pinned_json(request.pinned)))
        return _pending(row)

    async def get(self, pending_id: str) -> Pending:
        row = await self._pool.fetchrow("SELECT * FROM pending_rollbacks WHERE id = $1",
                                        pending_id)
        if row is None:
            raise InvalidInput("This rollback card is unknown to rollbot (it may be from another "
                               "installation).")
        return _pending(row)

    async def set_front_ref(self, pending_id: str, front_ref: dict[str, Any]) -> None:
        await self._pool.execute(
            "UPDATE pending_rollbacks SET front_ref = $2::jsonb WHERE id = $1",
            pending_id, json.dumps(front_ref))

    async def confirm(self, pending_id: str, *, by: str, needs_second: bool) -> Transition:
        """First confirmation: start now, or wait for a second approver."""
        nxt = PendingState.AWAITING_SECOND_APPROVAL if needs_second else PendingState.STARTED
        return await self._move(
            pending_id, PendingState.AWAITING_CONFIRMATION, nxt,
            "confirmed_by = $3", by)

    async def approve(self, pending_id: str, *, by: str) -> Transition:
        """Second approval: a different person from the requester and the first confirmer.

        The two-person rule is in the UPDATE's WHERE, not read before it: a confirmation and
        an approval by the same person racing each other cannot both pass.
        """
        row = await self._pool.fetchrow(
            "UPDATE pending_rollbacks SET state = 'started', approved_by = $3, updated_at = now()"
            " WHERE id = $1 AND state = $2 AND expires_at > now()"
            " AND requested_by <> $3 AND confirmed_by IS NOT NULL AND confirmed_by <> $3"
            " RETURNING *",
            pending_id, PendingState.AWAITING_SECOND_APPROVAL.value, by)
        if row is not None:
            return Transition(_pending(row), True)
        current = await self.get(pending_id)
        waiting = current.state is PendingState.AWAITING_SECOND_APPROVAL
        if waiting and current.expired(datetime.now(UTC)):
            return Transition(current, False, _EXPIRED)
        if by in (current.request.requested_by, current.confirmed_by) and current.state in (
                PendingState.AWAITING_CONFIRMATION, PendingState.AWAITING_SECOND_APPROVAL):
            what = _two_person_what(current.request.procedure)
            return Transition(current, False,
                              f"A {what} needs a second person: you requested or confirmed "
                              "this one, so someone else must approve it.")
        return Transition(current, False, _not_open(current))

    async def cancel(self, pending_id: str, *, by: str) -> Transition:
        row = await self._pool.fetchrow(
            "UPDATE pending_rollbacks SET state = 'cancelled', cancelled_by = $2,"
            " updated_at = now() WHERE id = $1"
            " AND state IN ('awaiting_confirmation', 'awaiting_second_approval') RETURNING *",
            pending_id, by)
        if row is not None:
            return Transition(_pending(row), True)
        current = await self.get(pending_id)
        return Transition(current, False, _not_open(current))

    async def front_ref_for_run(self, run_id: int) -> dict[str, Any] | None:
        """Where the front showed the run (its live message), if a front did.

        A person's run is shown on its card; an automatic rollback's on its deploy's message.
        """
        raw = await self._pool.fetchval(
            "SELECT front_ref FROM (SELECT front_ref, 0 AS rank FROM pending_rollbacks"
            " WHERE run_id = $1 UNION ALL SELECT front_ref, 1 FROM deploys WHERE run_id = $1)"
            " shown ORDER BY rank LIMIT 1", run_id)
        return json.loads(raw) if raw is not None else None

    async def attach_run(self, pending_id: str, run_id: int) -> None:
        await self._pool.execute("UPDATE pending_rollbacks SET run_id = $2 WHERE id = $1",
                                 pending_id, run_id)

    async def _move(self, pending_id: str, frm: PendingState, to: PendingState,
                    assignment: str, by: str) -> Transition:
        row = await self._pool.fetchrow(
            f"UPDATE pending_rollbacks SET state = $4, {assignment}, updated_at = now()"
            " WHERE id = $1 AND state = $2 AND expires_at > now() RETURNING *",
            pending_id, frm.value, by, to.value)
        if row is not None:
            return Transition(_pending(row), True)
        current = await self.get(pending_id)
        if current.state is frm:
            return Transition(current, False, _EXPIRED)
        return Transition(current, False, _not_open(current))


class AuditLog(Protocol):
    """Writes one audit row (``Store.audit``)."""

    async def __call__(self, *, environment: str, actor: str, kind: str,
                       run_id: int | None = None, host: str = "", command: str = "",
                       detail: str = "") -> int: ...


@dataclass(frozen=True)
class TwoPersonRule:
    """Which procedures need a second approver after the first confirmation (runbook)."""

    restore: bool = True
    migrations: bool = True

    def needs_second(self, procedure: ProcedureName) -> bool:
        if procedure is ProcedureName.MIGRATIONS:
            return self.migrations
        return procedure is ProcedureName.RESTORE and self.restore


class ApprovalService:
    """What a front asks of pending rollbacks: propose, confirm, approve, cancel, find them."""

    def __init__(self, *, approvals: Approvals, runbook: Runbook, rule: TwoPersonRule,
                 audit: AuditLog) -> None:
        self._approvals = approvals
        self._runbook = runbook
        self._rule = rule
        self._audit = audit

    async def propose(self, request: RollbackRequest, *, ttl: timedelta) -> Pending:
        return await self._approvals.propose(request, ttl=ttl)

    async def get(self, pending_id: str) -> Pending:
        return await self._approvals.get(pending_id)

    async def set_front_ref(self, pending_id: str, front_ref: dict[str, Any]) -> None:
        """Where the front shows the proposal (and what it needs to show it again)."""
        await self._approvals.set_front_ref(pending_id, front_ref)

    async def confirm(self, pending_id: str, *, by: str) -> Transition:
        """The first confirmation: starts the run, or waits for a second person."""
        pending = await self._approvals.get(pending_id)
        return await self._approvals.confirm(
            pending_id, by=by, needs_second=self._rule.needs_second(pending.request.procedure))

    async def approve(self, pending_id: str, *, by: str) -> Transition:
        """The second approval; a refused one is in the audit log."""
        move = await self._approvals.approve(pending_id, by=by)
        if not move.moved:
            await self._refused(by, f"approve restore card {pending_id}: {move.reason}",
                                environment=move.pending.request.environment)
        return move

    async def cancel(self, pending_id: str, *, by: str) -> Transition:
        return await self._approvals.cancel(pending_id, by=by)

    async def attach_run(self, pending_id: str, run_id: int) -> None:
        await self._approvals.attach_run(pending_id, run_id)

    async def front_ref_for_run(self, run_id: int) -> dict[str, Any] | None:
        """Where a front showed the run (its live message), if one did."""
        return await self._approvals.front_ref_for_run(run_id)

    def database_name(self, environment: str) -> str | None:
        """The database a restore in ``environment`` drops, or None when it has none."""
        _, env = self._runbook.environment(environment)
        return env.database.name if env.database else None

    async def typed_name_problem(self, pending_id: str, *, typed: str, by: str) -> str:
        """A restore is confirmed by typing the database's name: why this is not it, or ""."""
        pending = await self._approvals.get(pending_id)
        expected = self.database_name(pending.request.environment) or ""
        if typed.strip() == expected:
            return ""
        await self._refused(by, f"restore card {pending_id}: typed database name "
                                f"'{typed[:64]}' does not match",
                            environment=pending.request.environment)
        return f"That is not the database name. Type {expected} exactly to confirm."

    async def _refused(self, by: str, detail: str, *, environment: str) -> None:
        await self._audit(environment=environment, actor=by, kind="refusal", detail=detail)


_EXPIRED = ("This card has expired; nothing was run. Type the command again for a fresh "
            "pre-flight.")


def _two_person_what(procedure: ProcedureName) -> str:
    return "migration rollback" if procedure is ProcedureName.MIGRATIONS else "database restore"


def _not_open(p: Pending) -> str:
    if p.state is PendingState.STARTED:
        return (f"This rollback was already started (confirmed by {p.confirmed_by}); "
                "it runs once.")
    if p.state is PendingState.CANCELLED:
        return f"This rollback card was cancelled by {p.cancelled_by}; nothing was run."
    if p.state is PendingState.AWAITING_SECOND_APPROVAL:
        return f"Already confirmed by {p.confirmed_by}; it now needs a second approver."
    return "This card is not waiting for that."


def _pending(row: asyncpg.Record) -> Pending:
    request = RollbackRequest(
        environment=row["environment"], procedure=ProcedureName(row["procedure"]),
        target=parse_version(row["target"]) if row["target"] else None,
        requested_by=row["requested_by"], reason=row["reason"], backup=row["backup"],
        approved_by=tuple(x for x in (row["confirmed_by"], row["approved_by"]) if x),
        pinned=pinned_from_json(json.loads(row["pinned"]) if row["pinned"] else None),
    )
    return Pending(id=row["id"], request=request, state=PendingState(row["state"]),
                   created_at=row["created_at"], expires_at=row["expires_at"],
                   confirmed_by=row["confirmed_by"], approved_by=row["approved_by"],
                   cancelled_by=row["cancelled_by"], run_id=row["run_id"],
                   front_ref=json.loads(row["front_ref"]))
