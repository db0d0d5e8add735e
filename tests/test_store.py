"""The store: migrations, the one-active-run lock (enforced by PostgreSQL), audit."""

from __future__ import annotations

import asyncio

import pytest

from bot.errors import RunLocked
from bot.model import ProcedureName, RollbackRequest, RunOutcome, RunStatus
from bot.store.runs import Store


def req(who: str, env: str = "production") -> RollbackRequest:
    return RollbackRequest(environment=env, procedure=ProcedureName.SIMPLE, target=None,
                           requested_by=who)


async def test_migrations_apply_once(store: Store) -> None:
    assert await store.migrate() == []  # already applied by open()
    assert await store.ping()


async def test_a_second_run_is_refused_naming_the_first(store: Store) -> None:
    first = await store.begin_run(req("alice"), owner="host:1")
    with pytest.raises(RunLocked, match=f"run #{first} .* started by alice"):
        await store.begin_run(req("bob"), owner="host:2")
    other_env = await store.begin_run(req("carol", env="staging"), owner="host:3")
    assert other_env != first
    await store.finish_run(RunOutcome(run_id=first, status=RunStatus.SUCCEEDED,
                                      host_state="ok", message="done"))
    assert await store.begin_run(req("bob"), owner="host:2") > first


async def test_concurrent_requests_get_exactly_one_run(store: Store) -> None:
    results = await asyncio.gather(*(store.begin_run(req(f"u{i}"), owner=f"p{i}")
                                     for i in range(8)), return_exceptions=True)
    assert sum(isinstance(r, int) for r in results) == 1
    assert sum(isinstance(r, RunLocked) for r in results) == 7


async def test_a_heartbeat_gone_quiet_no_longer_means_dead(store: Store) -> None:
    """Only the lock decides (tests/test_run_lock.py): a slow but live run keeps it."""
    alive = await store.begin_run(req("alice"), owner="slow:1")
    await store._pool.execute(
        "UPDATE runs SET heartbeat_at = now() - interval '2 minutes' WHERE id = $1", alive)
    with pytest.raises(RunLocked, match=f"run #{alive} "):
        await store.begin_run(req("bob"), owner="host:2")
    assert (await store.active_run("production")).id == alive  # type: ignore[union-attr]


async def test_audit_entries_keep_commands_and_results(store: Store) -> None:
    run = await store.begin_run(req("alice"), owner="h")
    entry = await store.audit(environment="production", actor="alice", kind="command",
                              run_id=run, host="prod", command="docker-compose down")
    await store.audit_result(entry, exit_status=0, duration_s=0.4)
    [a] = await store.audit_entries(run_id=run)
    assert (a.command, a.exit_status, a.actor) == ("docker-compose down", 0, "alice")


async def test_a_step_keeps_its_own_start_even_when_recorded_late(store: Store) -> None:
    """The "started" record comes from an observer, after the step began: the step's own
    times win, so no duration is negative (a fast step used to show "-0.0 s")."""
    from datetime import UTC, datetime, timedelta

    from bot.model import StepResult, StepStatus

    run = await store.begin_run(req("alice"), owner="h")
    began = datetime.now(UTC) - timedelta(seconds=2)
    ended = began + timedelta(milliseconds=30)
    await store.step_started(run, position=0, key="wait_healthy", title="Wait for health",
                             destructive=False, started_at=datetime.now(UTC))  # late
    await store.step_finished(run, position=0, destructive=False, host_state="healthy",
                              result=StepResult(key="wait_healthy", title="Wait for health",
                                                status=StepStatus.SUCCEEDED, started_at=began,
                                                finished_at=ended))
    record = await store.get_run(run)
    assert record is not None
    [step] = record.steps
    assert step.started_at == began and step.duration_s == pytest.approx(0.03)


async def test_an_error_after_the_end_was_recorded_does_not_rewrite_it(store: Store) -> None:
    """The catch-all after an error (``unless_ended``) keeps an end already recorded."""
    ended: list[RunStatus] = []
    store.ended_hooks.append(lambda record: ended.append(record.status))
    run_id = await store.begin_run(req("alice"), owner="test")
    await store.finish_run(RunOutcome(run_id=run_id, status=RunStatus.SUCCEEDED,
                                      host_state="api runs v1.2.2", message="done"))
    # e.g. the audit insert after the end failed: the run is ended as interrupted "unless ended"
    await store.finish_run(RunOutcome(run_id=run_id, status=RunStatus.INTERRUPTED,
                                      host_state="unknown", message="rollbot stopped"),
                           unless_ended=True)
    record = await store.get_run(run_id)
    assert record is not None and record.status is RunStatus.SUCCEEDED
    assert record.message == "done"
    assert ended == [RunStatus.SUCCEEDED]  # counted once
    # a run that nothing ended yet is ended by the catch-all
    other = await store.begin_run(req("bob"), owner="test")
    await store.finish_run(RunOutcome(run_id=other, status=RunStatus.INTERRUPTED,
                                      host_state="unknown", message="rollbot stopped"),
                           unless_ended=True)
    assert (await store.get_run(other)).status is RunStatus.INTERRUPTED  # type: ignore[union-attr]
    assert ended == [RunStatus.SUCCEEDED, RunStatus.INTERRUPTED]
