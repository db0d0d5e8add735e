"""Confirmation and the two-person rule: each proposal moves once, whoever clicks how often."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from bot.approvals import PendingState
from bot.model import ProcedureName, RollbackRequest
from bot.store import Store
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
