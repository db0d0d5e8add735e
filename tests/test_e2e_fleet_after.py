"""On a two-host fleet in the sandbox: the checks after a rollback and the watch after a deploy
look at every host, over its own SSH connection and URLs, and name the host that is bad."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from bot.autorollback.deploys import DeployState, DeployStore
from bot.autorollback.machine import AutoRollback, Reception
from bot.autorollback.sightings import Sightings
from bot.config import AutoRollbackConfig, Runbook
from bot.edges.http import HttpxProbe
from bot.model import ProcedureName, RunOutcome, RunStatus, Tier
from bot.post_rollback.report import Reporter
from bot.post_rollback.schedule import VerificationSchedule
from bot.service import Rollbot
from bot.store.runs import Store
from tests.fleet import Fleet, FleetHost, fleet_runbook, free_port
from tests.sandbox import Sandbox
from tests.test_autorollback_machine import Told, event
from tests.test_e2e_procedures import request
from tests.test_e2e_verification import Announcements

pytestmark = pytest.mark.e2e


def runs_release(host: FleetHost, version: str) -> None:
    """The host's compose file names ``version`` (before ``up``): what that host will run."""
    text = host.file.read_text()
    host.file.write_text(re.sub(r"azora-api:[^\s\"']+", f"azora-api:{version}", text, count=1))


@pytest.fixture
def fleet(production: Sandbox) -> Iterator[Fleet]:
    hosts = Fleet(production, ["web-1", "web-2"])
    try:
        yield hosts
    finally:
        hosts.down()


def with_env(runbook: Runbook, **changes: object) -> Runbook:
    env = runbook.environments["production"].model_copy(update=changes)
    return runbook.model_copy(update={"environments": {**runbook.environments,
                                                       "production": env}})


async def a_finished_rollback(store: Store) -> int:
    """The records of a fleet rollback v1.2.3 → v1.2.2 that ended SUCCEEDED."""
    run_id = await store.begin_run(request(ProcedureName.SIMPLE), owner="test")
    await store.start_run(run_id, from_version="v1.2.3", to_version="v1.2.2", backup=None,
                          checks=())
    await store.finish_run(RunOutcome(run_id=run_id, status=RunStatus.SUCCEEDED,
                                      host_state="web-1, web-2 run v1.2.2",
                                      message="Rolled back to v1.2.2.", from_version="v1.2.3",
                                      to_version="v1.2.2"))
    return run_id


async def test_the_checks_after_a_fleet_rollback_name_the_host_that_is_unhealthy(
        production: Sandbox, fleet: Fleet, runbook: Runbook, store: Store, tmp_path: Path
) -> None:
    # The rollback is recorded as done, but web-2 came back on the broken v1.2.3 (someone
    # redeployed it by hand): the checks must say so, and name web-2, not the fleet.
    runs_release(fleet["web-1"], "v1.2.2")
    fleet_book = with_env(fleet_runbook(runbook, fleet, canary=1),
                          verify_after_minutes=(0.01, 0.02))
    async with httpx.AsyncClient() as client:
        bot = Rollbot(runbook=fleet_book, store=store, probe=HttpxProbe(client))
        run_id = await a_finished_rollback(store)
        fleet.up()
        heard = Announcements()
        verifier = VerificationSchedule(rollbot=bot, announce=heard, sweep_s=1)
        await verifier.start()
        try:
            await verifier.schedule_run(run_id)
            await heard.wait(2)
        finally:
            await verifier.stop()
    # Both were due before the fleet was up, so they ran at once, in either order.
    checks = {r.tier: r for _, r in heard.seen}
    assert set(checks) == {Tier.IMMEDIATE, Tier.EXTENDED}
    items = {i.name: i for i in checks[Tier.EXTENDED].items}
    assert not items["Health"].ok and items["Health"].hosts == ("web-2",)
    assert items["Health"].detail == (f"web-2: {fleet['web-2'].base_url}/health → 404 "
                                      "(fine on web-1)")
    assert items["Version"].detail.startswith("web-2: reports v1.2.3 (expected v1.2.2)")
    assert items["Services Up"].hosts == ("web-2",)
    assert "api runs v1.2.3" in items["Services Up"].detail
    # web-2's own log, read over its own SSH session: v1.2.3 cannot reach its payment service.
    assert items["Error logs"].hosts == ("web-2",)
    assert "cannot reach payment service" in items["Error logs"].detail
    # The shared database is counted once per look, not once per host.
    assert items["Row counts"].ok and items["Row counts"].detail == "users 5, orders 8"
    counted = [e for e in await store.audit_entries(run_id=run_id) if "count(*)" in e.command]
    assert len(counted) == 2  # the baseline after the rollback, and the Extended check
    # The report lists both hosts and what the latest check found on each.
    _, markdown = await Reporter(store=store, directory=tmp_path, runbook=fleet_book).write(run_id)
    assert re.search(r"^\| web-1 \|.*\| ✅ passed \(\w+ check\) \|$", markdown, re.M), markdown
    assert re.search(r"^\| web-2 \|.*\| ❌ Services Up, Health, Version, .*\(\w+ check\) \|$",
                     markdown, re.M), markdown
    assert "Hosts found bad: web-2 (Services Up, Health, Version" in markdown


@pytest.fixture
async def overloaded_front() -> AsyncIterator[str]:
    """web-2's load balancer: every request answers 503 (its upstream pool is exhausted)."""
    async def busy(_request: web.Request) -> web.Response:
        return web.Response(status=503, text="upstream overloaded")
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", busy)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_a_deploy_watch_on_a_fleet_triggers_on_the_host_answering_5xx_and_names_it(
        production: Sandbox, fleet: Fleet, runbook: Runbook, store: Store,
        overloaded_front: str) -> None:
    # CI deployed v1.2.3 on both hosts; web-2 answers every request with 503.
    fleet.up()
    book = fleet_runbook(runbook, fleet, canary=1)
    env = book.environments["production"].model_dump(exclude={"host_envs"})
    env["hosts"][1].update(health_url=f"{overloaded_front}/health",
                           version_url=f"{overloaded_front}/version",
                           smoke_urls=[f"{overloaded_front}/api/users"])
    env["auto_rollback"] = AutoRollbackConfig(
        watch_minutes=1, interval_seconds=0.5, window_checks=2, max_5xx_ratio=0.2,
        countdown_seconds=600).model_dump()
    book = Runbook.model_validate({**book.model_dump(), "environments": {
        **{k: v.model_dump(exclude={"host_envs"}) for k, v in book.environments.items()},
        "production": env}})
    told = Told()
    async with httpx.AsyncClient() as client:
        bot = Rollbot(runbook=book, store=store, probe=HttpxProbe(client))
        deploys = DeployStore(store.pool)
        auto = AutoRollback(rollbot=bot, deploys=deploys, sightings=Sightings(store.pool),
                            notifier=told)
        received = await auto.receive(event("deployed", version="v1.2.3", previous="v1.2.2"))
        assert received.reception is Reception.ACCEPTED
        deploy_id = received.answer["deploy"]
        for _ in range(300):
            if any(what == "counting_down" for what, _, _ in told.events):
                break
            await asyncio.sleep(0.1)
        [(_, _, facts)] = [e for e in told.events if e[0] == "counting_down"]
        # The 5xx window is full at the second look: web-2 crossed it; web-1 is not named.
        assert facts["triggers"] == ["web-2: services return 500 errors: 100% of answers were "
                                     "5xx over the last 2 checks (limit 20%)"]
        deploy = await deploys.get(deploy_id)
        assert deploy.state is DeployState.COUNTDOWN and "web-2:" in deploy.detail
        assert (await auto.cancel(deploy_id, by="U0ALICE")).taken
        await auto.wait_idle(10)
    # Both hosts were watched over their own SSH sessions, and nothing was rolled back.
    assert fleet["web-1"].running_image() == "azora-api:v1.2.3"
    assert fleet["web-2"].running_image() == "azora-api:v1.2.3"
    assert await store.history(limit=5) == []
