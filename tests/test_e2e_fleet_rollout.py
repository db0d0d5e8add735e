"""On-call rolls a fleet back: the canary first and verified, then the rest in parallel.

Fleet hosts are copies of the sandbox's compose app (tests/fleet.py), each with its own
directory, port, compose project and SSH connection; all start on v1.2.3.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from bot.config import Runbook
from bot.edges.http import HttpxProbe
from bot.errors import RunLocked
from bot.events import RunEvent, StepStarted
from bot.model import ProcedureName, RollbackRequest, RunStatus, StepStatus
from bot.service import Rollbot
from bot.store.runs import Store
from bot.versions import parse_version
from tests.fleet import Fleet, fleet_runbook, free_port
from tests.sandbox import BACKUP_COUNTS, GOOD_BACKUP, Sandbox

pytestmark = pytest.mark.e2e

NAMES = ["web-1", "web-2", "web-3"]
QUICK = {"timeouts": {"health_s": 6.0, "health_interval_s": 0.2}}


def request(procedure: ProcedureName = ProcedureName.SIMPLE,
            backup: str | None = None) -> RollbackRequest:
    return RollbackRequest(environment="production", procedure=procedure,
                           target=parse_version("v1.2.2"), requested_by="alice",
                           reason="v1.2.3 health check fails", backup=backup)


@pytest.fixture
def fleet(production: Sandbox) -> Iterator[Fleet]:
    hosts = Fleet(production, NAMES)
    try:
        hosts.up()
        yield hosts
    finally:
        hosts.down()


def make_rollbot(runbook: Runbook, store: Store, client: httpx.AsyncClient) -> Rollbot:
    return Rollbot(runbook=runbook, store=store, probe=HttpxProbe(client))


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as c:
        yield c


def images(fleet: Fleet) -> dict[str, str]:
    return {h.name: h.running_image() for h in fleet.hosts}


def compose_tags(fleet: Fleet) -> dict[str, bool]:
    """Whether each host's compose file still names v1.2.3."""
    return {h.name: "azora-api:v1.2.3" in h.file.read_text() for h in fleet.hosts}


async def test_a_fleet_rolls_back_canary_first_then_the_rest_together(
    runbook: Runbook, store: Store, client: httpx.AsyncClient, fleet: Fleet
) -> None:
    rollbot = make_rollbot(fleet_runbook(runbook, fleet, canary=1), store, client)
    outcome = await rollbot.rollback(request())
    assert outcome.status is RunStatus.SUCCEEDED, outcome.message
    assert fleet.versions() == dict.fromkeys(NAMES, "v1.2.2")
    assert images(fleet) == dict.fromkeys(NAMES, "azora-api:v1.2.2")
    assert [h.name for h in outcome.hosts] == NAMES
    assert all(h.status is RunStatus.SUCCEEDED and h.version == "v1.2.2" for h in outcome.hosts)
    assert outcome.message.startswith("Rolled back all 3 hosts to v1.2.2.")
    # the store names each step's host; the canary finished before the others started
    record = await store.get_run(outcome.run_id)
    assert record is not None and record.status is RunStatus.SUCCEEDED
    by_host = {n: [s for s in record.steps if s.host == n] for n in NAMES}
    assert all(len(steps) == 7 for steps in by_host.values())
    canary_done = max(s.finished_at for s in by_host["web-1"] if s.finished_at)
    others = [s.started_at for n in ("web-2", "web-3") for s in by_host[n] if s.started_at]
    assert canary_done < min(others)
    # web-2 and web-3 went side by side: each started before the other finished
    w2, w3 = by_host["web-2"], by_host["web-3"]
    assert w2[0].started_at and w3[-1].finished_at and w3[0].started_at and w2[-1].finished_at
    assert w2[0].started_at < w3[-1].finished_at and w3[0].started_at < w2[-1].finished_at
    # each host's compose file was switched, with its own copy kept
    for h in fleet.hosts:
        assert "azora-api:v1.2.2" in h.file.read_text()
        assert len(list(h.dir.glob("docker-compose.yml.rollbot-*.bak"))) == 1


async def test_plan_lists_every_hosts_steps_and_names_the_rollout_order(
    runbook: Runbook, store: Store, client: httpx.AsyncClient, fleet: Fleet
) -> None:
    rollbot = make_rollbot(fleet_runbook(runbook, fleet, canary=1), store, client)
    plan = await rollbot.plan(request())
    assert plan.preflight.ok, plan.preflight.refusal
    assert "web-1 (canary: alone, and verified before any other host is touched), then " \
           "web-2, web-3" in plan.title
    assert [s.host for s in plan.steps] == [n for n in NAMES for _ in range(7)]
    assert [s.index for s in plan.steps] == list(range(21))
    names = [c.name for c in plan.preflight.checks]
    for host in NAMES:
        for check in ("Host reachable", "Compose project", "Target image present",
                      "Version endpoint"):
            assert f"{host}: {check}" in names
    assert names[-1] == "Lock"
    assert images(fleet) == dict.fromkeys(NAMES, "azora-api:v1.2.3")  # a plan changes nothing


async def test_hosts_that_disagree_each_roll_back_from_their_own_version(
    runbook: Runbook, store: Store, client: httpx.AsyncClient, fleet: Fleet
) -> None:
    # web-3 was never upgraded past v1.2.1 (an unfinished rollout of an older release)
    web3 = fleet["web-3"]
    web3.file.write_text(web3.file.read_text().replace("azora-api:v1.2.3", "azora-api:v1.2.1"))
    web3.up()
    rollbot = make_rollbot(fleet_runbook(runbook, fleet, canary=1), store, client)
    plan = await rollbot.plan(request())
    mix = next(c for c in plan.preflight.checks if c.name == "Current version")
    assert mix.detail == ("the hosts disagree: web-1, web-2 run v1.2.3; web-3 runs v1.2.1; "
                          "each host rolls back from its own version")
    assert plan.preflight.current == "v1.2.3"
    outcome = await rollbot.rollback(request())
    assert outcome.status is RunStatus.SUCCEEDED, outcome.message
    assert fleet.versions() == dict.fromkeys(NAMES, "v1.2.2")
    checked = {s.host: s.summary for s in outcome.steps if s.key == "check_current"}
    assert checked["web-3"].startswith("api runs v1.2.1;")
    assert checked["web-1"].startswith("api runs v1.2.3;")


async def test_a_host_with_an_unverified_key_refuses_the_run_and_nothing_changes(
    runbook: Runbook, store: Store, client: httpx.AsyncClient, fleet: Fleet,
    sandbox_host: Sandbox
) -> None:
    other = str(sandbox_host.state / "client" / "known_hosts.other")
    book = fleet_runbook(runbook, fleet, canary=1,
                         hosts={"web-2": {"ssh": {"known_hosts": other}}})
    rollbot = make_rollbot(book, store, client)
    before = {h.name: h.file.read_text() for h in fleet.hosts}
    outcome = await rollbot.rollback(request())
    assert outcome.status is RunStatus.REFUSED
    assert "web-2: Host reachable:" in outcome.message
    assert "does not match" in outcome.message
    assert outcome.message.startswith("Refused by pre-flight, nothing was changed.")
    assert {h.name: h.file.read_text() for h in fleet.hosts} == before
    assert images(fleet) == dict.fromkeys(NAMES, "azora-api:v1.2.3")
    entries = await store.audit_entries(run_id=outcome.run_id)
    assert any(e.kind == "refusal" and "web-2" in e.detail for e in entries)
    assert not any(e.kind == "command" and (" down" in e.command or "up -d" in e.command)
                   for e in entries)


async def test_a_failed_canary_stops_the_rollout_and_leaves_the_others_untouched(
    runbook: Runbook, store: Store, client: httpx.AsyncClient, fleet: Fleet
) -> None:
    # The canary's health URL answers nothing: it is stopped, switched and started, then fails.
    nowhere = f"http://127.0.0.1:{free_port()}/health"
    book = fleet_runbook(runbook, fleet, canary=1, max_failed_hosts=2, settings=QUICK,
                         hosts={"web-1": {"health_url": nowhere}})
    outcome = await make_rollbot(book, store, client).rollback(request())
    assert outcome.status is RunStatus.FAILED
    assert outcome.message.startswith("Rollout stopped: web-1 failed as the canary;")
    assert "web-1: FAILED at 'Wait for health'" in outcome.message
    assert "web-2, web-3: untouched: api still runs v1.2.3" in outcome.message
    assert images(fleet) == {"web-1": "azora-api:v1.2.2", "web-2": "azora-api:v1.2.3",
                             "web-3": "azora-api:v1.2.3"}
    assert compose_tags(fleet) == {"web-1": False, "web-2": True, "web-3": True}
    hosts = {h.name: h for h in outcome.hosts}
    assert not hosts["web-2"].touched and hosts["web-2"].version == "v1.2.3"
    record = await store.get_run(outcome.run_id)
    assert record is not None
    assert all(s.status is StepStatus.SKIPPED for s in record.steps if s.host != "web-1")


async def test_a_tolerated_failure_rolls_the_rest_back_but_is_not_a_success(
    runbook: Runbook, store: Store, client: httpx.AsyncClient, fleet: Fleet
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}/health"
    book = fleet_runbook(runbook, fleet, canary=1, batch_size=1, max_failed_hosts=1,
                         settings=QUICK, hosts={"web-2": {"health_url": nowhere}})
    outcome = await make_rollbot(book, store, client).rollback(request())
    assert outcome.status is RunStatus.FAILED, outcome.message
    assert outcome.message.startswith(
        "Rolled back 2 of 3 hosts to v1.2.2; web-2 failed (tolerated by max_failed_hosts = 1)")
    assert fleet["web-1"].version() == "v1.2.2" and fleet["web-3"].version() == "v1.2.2"
    assert {h.name: h.status for h in outcome.hosts} == {
        "web-1": RunStatus.SUCCEEDED, "web-2": RunStatus.FAILED, "web-3": RunStatus.SUCCEEDED}


def _slow_compose(host_dir: Path, *, pause: str) -> str:
    """A compose command that pauses before `down` (a slow host), then runs docker-compose."""
    script = host_dir / "slow-compose"
    script.write_text('#!/bin/sh\ncase " $* " in *" down "*) sleep "$PAUSE" ;; esac\n'
                      'exec docker-compose "$@"\n')
    script.chmod(0o755)
    return f"env PAUSE={pause} {script}"


def _sshd_serving(needle: str) -> int | None:
    """The pid of the sshd session process whose command runs ``needle``."""
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if needle not in cmdline or cmdline.startswith(("sh -c", "/bin/sh -c")):
            continue
        while pid > 1:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                return None
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            if comm == "sshd":
                return pid
            pid = ppid
    return None


async def test_a_host_that_drops_its_ssh_connection_mid_step_stops_the_rollout(
    runbook: Runbook, store: Store, client: httpx.AsyncClient, fleet: Fleet
) -> None:
    marker = f"600.{secrets.randbelow(10**6):06d}"
    hosts = {
        "web-2": {"compose": {"command": _slow_compose(fleet["web-2"].dir, pause=marker)
                              + f" -p {fleet['web-2'].project}"}},
        "web-3": {"compose": {"command": _slow_compose(fleet["web-3"].dir, pause="4")
                              + f" -p {fleet['web-3'].project}"}},
    }
    book = fleet_runbook(runbook, fleet, canary=1, hosts=hosts)
    rollbot = make_rollbot(book, store, client)
    task = asyncio.create_task(rollbot.rollback(request()))
    deadline = time.monotonic() + 120
    while (sshd := _sshd_serving(f"sleep {marker}")) is None:
        assert not task.done(), (await task).message
        assert time.monotonic() < deadline, "web-2 never reached its stop step"
        await asyncio.sleep(0.1)
    # the lock is the environment's: a second rollback, even of the same fleet, is refused
    with pytest.raises(RunLocked):
        await rollbot.rollback(request())
    assert not task.done()
    os.kill(sshd, signal.SIGKILL)  # web-2's own connection drops while it stops its services
    outcome = await asyncio.wait_for(task, timeout=120)
    assert outcome.status is RunStatus.FAILED, outcome.message
    assert outcome.message.startswith("Rollout stopped: web-2 failed, more than "
                                      "max_failed_hosts = 0;")
    assert "web-2: FAILED at 'Stop services': the SSH connection to" in outcome.message
    assert "dropped" in outcome.message
    # web-3 finished the step it was in, and nothing further started on it
    assert "web-3: stopped before 'Switch compose file to v1.2.2': services STOPPED" in (
        outcome.message)
    record = await store.get_run(outcome.run_id)
    assert record is not None
    web3 = {s.key: s.status for s in record.steps if s.host == "web-3"}
    assert web3["stop_services"] is StepStatus.SUCCEEDED
    assert web3["switch_version"] is StepStatus.SKIPPED
    assert fleet["web-1"].version() == "v1.2.2"
    assert "azora-api:v1.2.3" in fleet["web-3"].file.read_text()


async def test_a_fleet_migration_rollback_stops_every_host_then_migrates_once(
    runbook: Runbook, store: Store, client: httpx.AsyncClient, fleet: Fleet,
    production: Sandbox
) -> None:
    database = runbook.environments["production"].model_dump()["database"]
    book = fleet_runbook(runbook, fleet, canary=1,
                         settings={"database": {**database, "host": "web-2"}})
    before = production.psql("SELECT name FROM migrations ORDER BY executed_at DESC")
    outcome = await make_rollbot(book, store, client).rollback(
        request(ProcedureName.MIGRATIONS))
    assert outcome.status is RunStatus.SUCCEEDED, outcome.message
    after = production.psql("SELECT name FROM migrations ORDER BY executed_at DESC")
    assert after.splitlines() == before.splitlines()[1:]  # one migration undone, once
    assert fleet.versions() == dict.fromkeys(NAMES, "v1.2.2")
    record = await store.get_run(outcome.run_id)
    assert record is not None
    downs = [s for s in record.steps if s.key == "migrate_down"]
    assert [s.host for s in downs] == ["web-2"]
    stops = [s for s in record.steps if s.key == "stop_services"]
    assert sorted(s.host for s in stops) == NAMES
    assert downs[0].started_at and all(s.finished_at and s.finished_at <= downs[0].started_at
                                       for s in stops)
    starts = [s for s in record.steps if s.key == "switch_version"]
    assert downs[0].finished_at and all(s.started_at and s.started_at >= downs[0].finished_at
                                        for s in starts)
    commands = [e.command for e in await store.audit_entries(run_id=outcome.run_id)
                if e.kind == "command"]
    assert sum("migrate down" in c for c in commands) == 1


async def test_cancel_stops_every_host_before_its_next_step_and_offers_no_put_back(
    runbook: Runbook, store: Store, client: httpx.AsyncClient, fleet: Fleet
) -> None:
    rollbot = make_rollbot(fleet_runbook(runbook, fleet, canary=1), store, client)

    async def cancel_when_the_batch_stops(event: RunEvent) -> None:
        if (isinstance(event, StepStarted) and event.step.host == "web-2"
                and event.step.key == "stop_services"):
            assert await rollbot.cancel(event.run_id, by="bob")

    outcome = await rollbot.rollback(request(), observers=[cancel_when_the_batch_stops])
    assert outcome.status is RunStatus.CANCELLED, outcome.message
    assert outcome.message.startswith("Cancelled by bob: nothing further was started")
    assert "Resume and put-back are not offered for a fleet" in outcome.message
    web2 = {s.key: s.status for s in outcome.steps if s.host == "web-2"}
    assert web2["stop_services"] is StepStatus.SUCCEEDED
    assert web2["switch_version"] is StepStatus.SKIPPED
    assert "web-2" in outcome.message and "stopped before 'Switch compose file" in outcome.message
    assert fleet["web-1"].version() == "v1.2.2"
    assert await rollbot.recoveries.get(outcome.run_id) is None


async def test_a_fleet_restore_stops_every_host_then_restores_the_database_once(
    runbook: Runbook, store: Store, client: httpx.AsyncClient, fleet: Fleet,
    production: Sandbox
) -> None:
    outcome = await make_rollbot(fleet_runbook(runbook, fleet, canary=1), store, client).rollback(
        request(ProcedureName.RESTORE, backup=GOOD_BACKUP))
    assert outcome.status is RunStatus.SUCCEEDED, outcome.message
    assert production.row_counts() == BACKUP_COUNTS
    assert fleet.versions() == dict.fromkeys(NAMES, "v1.2.2")
    record = await store.get_run(outcome.run_id)
    assert record is not None
    # the database work on the first host (the default database.host), once
    for key in ("verify_backup", "safety_backup", "drop_database", "restore_backup"):
        assert [s.host for s in record.steps if s.key == key] == ["web-1"]
    drop = next(s for s in record.steps if s.key == "drop_database")
    stops = [s for s in record.steps if s.key == "stop_services"]
    assert drop.started_at and all(s.finished_at and s.finished_at <= drop.started_at
                                   for s in stops)
    sent = [e.command for e in await store.audit_entries(run_id=outcome.run_id)]
    assert sum("DROP DATABASE" in c for c in sent) == 1
