"""What the fronts ask of a card: the two-person rule and the typed database name live in bot/."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from bot.approvals import ApprovalService, PendingState, TwoPersonRule
from bot.config import load_runbook
from bot.model import ProcedureName, RollbackRequest
from bot.store.runs import Store
from bot.versions import parse_version

RUNBOOK = load_runbook(Path(__file__).parent / "data" / "rollbot.example.toml")


def request(procedure: ProcedureName, by: str = "U0ALICE") -> RollbackRequest:
    return RollbackRequest(environment="production", procedure=procedure,
                           target=parse_version("v1.2.2"), requested_by=by)


def service(store: Store, rule: TwoPersonRule | None = None) -> ApprovalService:
    return ApprovalService(approvals=store.approvals, runbook=RUNBOOK,
                           rule=rule or TwoPersonRule(), audit=store.audit)


def test_the_rule_asks_a_second_person_for_data_changes_only() -> None:
    rule = TwoPersonRule()
    assert rule.needs_second(ProcedureName.RESTORE)
    assert rule.needs_second(ProcedureName.MIGRATIONS)
    assert not rule.needs_second(ProcedureName.SIMPLE)
    assert not rule.needs_second(ProcedureName.EMERGENCY)
    assert not TwoPersonRule(restore=False).needs_second(ProcedureName.RESTORE)
    assert not TwoPersonRule(migrations=False).needs_second(ProcedureName.MIGRATIONS)


async def test_confirming_a_restore_waits_for_a_second_person_and_a_simple_one_starts(
        store: Store) -> None:
    cards = service(store)
    restore = await cards.propose(request(ProcedureName.RESTORE), ttl=timedelta(minutes=15))
    simple = await cards.propose(request(ProcedureName.SIMPLE), ttl=timedelta(minutes=15))
    assert (await cards.confirm(restore.id, by="U0BOB")).pending.state is \
        PendingState.AWAITING_SECOND_APPROVAL
    assert (await cards.confirm(simple.id, by="U0BOB")).pending.state is PendingState.STARTED


async def test_a_runbook_without_the_rule_starts_a_restore_on_the_first_confirmation(
        store: Store) -> None:
    cards = service(store, TwoPersonRule(restore=False))
    restore = await cards.propose(request(ProcedureName.RESTORE), ttl=timedelta(minutes=15))
    assert (await cards.confirm(restore.id, by="U0BOB")).pending.state is PendingState.STARTED


async def test_a_wrong_database_name_is_refused_in_a_sentence_and_audited(store: Store) -> None:
    cards = service(store)
    card = await cards.propose(request(ProcedureName.RESTORE), ttl=timedelta(minutes=15))
    database = cards.database_name("production")
    assert database
    problem = await cards.typed_name_problem(card.id, typed="azora", by="U0BOB")
    assert problem == f"That is not the database name. Type {database} exactly to confirm."
    assert await cards.typed_name_problem(card.id, typed=f" {database} ", by="U0BOB") == ""
    refusals = [e for e in await store.audit_entries() if e.kind == "refusal"]
    assert [e.detail for e in refusals] == [
        f"restore card {card.id}: typed database name 'azora' does not match"]
    assert (await cards.get(card.id)).state is PendingState.AWAITING_CONFIRMATION


async def test_the_requester_cannot_approve_and_the_refusal_is_audited(store: Store) -> None:
    cards = service(store)
    card = await cards.propose(request(ProcedureName.RESTORE), ttl=timedelta(minutes=15))
    await cards.confirm(card.id, by="U0BOB")
    refused = await cards.approve(card.id, by="U0ALICE")
    assert not refused.moved and "needs a second person" in refused.reason
    assert [e.actor for e in await store.audit_entries() if e.kind == "refusal"] == ["U0ALICE"]
    assert (await cards.approve(card.id, by="U0CAROL")).pending.state is PendingState.STARTED
