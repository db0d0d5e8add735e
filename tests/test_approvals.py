"""Confirmation and the two-person rule: each proposal moves once, whoever clicks how often."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from bot.approvals import PendingState
from bot.model import Backup, Pinned, ProcedureName, RollbackRequest
from bot.pinning import pinned_request
from bot.store.runs import Store
from bot.versions import parse_version


def restore_request(by: str = "U0ALICE") -> RollbackRequest:
    return RollbackRequest(environment="production", procedure=ProcedureName.RESTORE,
                           target=parse_version("v1.2.2"), requested_by=by)


async def test_concurrent_confirmations_move_it_once(store: Store) -> None:
    p = await store.approvals.propose(restore_request(), ttl=timedelta(minutes=15))
    moves = await asyncio.gather(*(store.approvals.confirm(p.id, by=f"U{i}", needs_second=False)
                                   for i in range(10)))
    assert sum(m.moved for m in moves) == 1
    losers = [m for m in moves if not m.moved]
    assert all("already started" in m.reason for m in losers)


async def test_second_approver_must_be_another_person(store: Store) -> None:
    p = await store.approvals.propose(restore_request("U0ALICE"), ttl=timedelta(minutes=15))
    first = await store.approvals.confirm(p.id, by="U0BOB", needs_second=True)
    assert first.moved and first.pending.state is PendingState.AWAITING_SECOND_APPROVAL
    for same in ("U0ALICE", "U0BOB"):
        refused = await store.approvals.approve(p.id, by=same)
        assert not refused.moved and "second person" in refused.reason
    ok = await store.approvals.approve(p.id, by="U0CAROL")
    assert ok.moved and ok.pending.state is PendingState.STARTED
    assert ok.pending.request.approved_by == ("U0BOB", "U0CAROL")
    again = await store.approvals.approve(p.id, by="U0DAVE")
    assert not again.moved


async def test_expired_cards_refuse(store: Store) -> None:
    p = await store.approvals.propose(restore_request(), ttl=timedelta(milliseconds=1))
    await asyncio.sleep(0.01)
    late = await store.approvals.confirm(p.id, by="U0BOB", needs_second=False)
    assert not late.moved and "expired" in late.reason


async def test_cancelled_cards_refuse_and_say_who(store: Store) -> None:
    p = await store.approvals.propose(restore_request(), ttl=timedelta(minutes=15))
    assert (await store.approvals.cancel(p.id, by="U0BOB")).moved
    late = await store.approvals.confirm(p.id, by="U0ALICE", needs_second=False)
    assert not late.moved and "cancelled by U0BOB" in late.reason


async def test_the_same_person_confirming_and_approving_at_once_never_starts_it(
    store: Store
) -> None:
    # BOB's confirmation and BOB's approval race: whichever lands second, the two-person rule is
    # in the approval's UPDATE itself, so BOB never counts twice.
    for _ in range(30):
        p = await store.approvals.propose(restore_request("U0ALICE"), ttl=timedelta(minutes=15))
        confirmed, approved = await asyncio.gather(
            store.approvals.confirm(p.id, by="U0BOB", needs_second=True),
            store.approvals.approve(p.id, by="U0BOB"))
        assert confirmed.moved and not approved.moved
        now = await store.approvals.get(p.id)
        assert now.state is PendingState.AWAITING_SECOND_APPROVAL and now.approved_by is None


async def test_of_many_racing_approvers_one_other_person_starts_it(store: Store) -> None:
    p = await store.approvals.propose(restore_request("U0ALICE"), ttl=timedelta(minutes=15))
    await store.approvals.confirm(p.id, by="U0BOB", needs_second=True)
    people = ["U0ALICE", "U0BOB"] * 5 + ["U0CAROL", "U0DAVE"]
    moves = await asyncio.gather(*(store.approvals.approve(p.id, by=u) for u in people))
    winners = [m for m in moves if m.moved]
    assert len(winners) == 1
    assert winners[0].pending.approved_by in ("U0CAROL", "U0DAVE")
    assert not any(m.moved for who, m in zip(people, moves, strict=True)
                   if who in ("U0ALICE", "U0BOB"))


async def test_a_migration_rollback_asks_for_a_second_person_by_name(store: Store) -> None:
    request = RollbackRequest(environment="production", procedure=ProcedureName.MIGRATIONS,
                              target=parse_version("v1.2.2"), requested_by="U0ALICE")
    p = await store.approvals.propose(request, ttl=timedelta(minutes=15))
    await store.approvals.confirm(p.id, by="U0ALICE", needs_second=True)
    refused = await store.approvals.approve(p.id, by="U0ALICE")
    assert not refused.moved and refused.reason.startswith(
        "A migration rollback needs a second person")


async def test_the_pin_is_kept_with_the_card(store: Store) -> None:
    shown = Backup(name="azora_prod_20261127T020000.sql.gz",
                   path="/backups/azora_prod_20261127T020000.sql.gz", size=12345,
                   modified=datetime(2026, 11, 27, 2, 0, 0, 123456, tzinfo=UTC))
    request = pinned_request(restore_request(), target="v1.2.2", backup=shown)
    p = await store.approvals.propose(request, ttl=timedelta(minutes=15))
    back = (await store.approvals.get(p.id)).request
    assert back.pinned == Pinned(target="v1.2.2", backup=shown)
    assert back.backup == shown.name  # the run picks this file by name, never "the newest"
