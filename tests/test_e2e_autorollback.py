"""CI announces a deploy; rollbot watches, counts down, and rolls back unless a person stops it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.model import ProcedureName, RunStatus
from bot.store import Store
from bot.webhook import sign
from handlers.ids import Action
from tests.sandbox import Sandbox
from tests.slack_world import ALICE, BOB, MALLORY, SlackWorld, message_text, slack_world
from tests.test_e2e_procedures import request

pytestmark = pytest.mark.e2e
HOOK_SECRET = "ci-hook-secret-0123456789"
FAST = """
[environments.production.auto_rollback]
checks = 3
interval_seconds = 0.3
countdown_seconds = COUNTDOWN
"""


def fast(countdown: float) -> Any:
    def edit(text: str) -> str:
        return text.replace("[environments.production.ssh]",
                            FAST.replace("COUNTDOWN", str(countdown)).strip() +
                            "\n[environments.production.ssh]", 1)
    return edit


@pytest.fixture
async def world(production: Sandbox, store: Store, tmp_path: Path,
                request: pytest.FixtureRequest) -> AsyncIterator[SlackWorld]:
    countdown = getattr(request, "param", 2.0)
    async with slack_world(production, store.dsn, tmp_path, runbook_text=fast(countdown),
                           webhook_secret=HOOK_SECRET) as w:
        yield w
        await w.service.auto.wait_idle(60)
        assert w.problems() == []


async def hook(world: SlackWorld, path: str, body: dict[str, Any], *,
               secret: str = HOOK_SECRET, timestamp: int | None = None,
               raw: bytes | None = None) -> httpx.Response:
    data = raw if raw is not None else json.dumps(body).encode()
    ts = timestamp or int(time.time())
    async with httpx.AsyncClient() as client:
        return await client.post(
            f"http://127.0.0.1:{world.service.port}{path}", content=data,
            headers={"X-Rollbot-Timestamp": str(ts),
                     "X-Rollbot-Signature": sign(secret, ts, data),
                     "Content-Type": "application/json"})


def deploy(version: str = "v1.2.3", previous: str = "v1.2.2", stage: str = "deployed",
           **extra: str) -> dict[str, Any]:
    return {"environment": "production", "version": version, "previous_version": previous,
            "stage": stage, "commit": "abc1234", "actor": "ci-bot",
            "run_url": "https://ci.example.com/run/1", **extra}


async def test_bad_deploy_is_rolled_back_after_the_countdown_and_quarantined(
    world: SlackWorld, production: Sandbox, store: Store
) -> None:
    answer = await hook(world, "/hooks/deploy", deploy())
    assert answer.status_code == 202
    countdown = await world.wait_message(lambda m: "is failing. Rolling back to v1.2.2 in 2 s"
                                         in m.text)
    assert "health checks fail" in message_text(countdown)
    await world.wait_message(lambda m: "Rollback completed. Service restored to v1.2.2" in m.text,
                             timeout=120)
    assert production.running_image() == "azora-api:v1.2.2"
    [run] = await store.history()
    assert run.status is RunStatus.SUCCEEDED and run.requested_by == "rollbot (automatic)"
    assert run.reason.startswith("automatic rollback of v1.2.3")
    allowed = await hook(world, "/hooks/deploy/allowed",
                         {"environment": "production", "version": "v1.2.3"})
    assert allowed.status_code == 409
    assert allowed.json()["quarantined_by"] == "rollbot (automatic)"
    ok = await hook(world, "/hooks/deploy/allowed",
                    {"environment": "production", "version": "v1.2.2"})
    assert ok.status_code == 200 and ok.json() == {"allowed": True}
    await world.command(BOB, "unquarantine v1.2.3 fixed in v1.2.4")
    await world.wait_message(lambda m: "v1.2.3 may be deployed to production again" in m.text)
    again = await hook(world, "/hooks/deploy/allowed",
                       {"environment": "production", "version": "v1.2.3"})
    assert again.status_code == 200


async def test_a_good_deploy_is_watched_and_left_alone(world: SlackWorld, store: Store) -> None:
    first = await world.service.app.rollbot.rollback(request(ProcedureName.SIMPLE))
    assert first.status is RunStatus.SUCCEEDED  # v1.2.2 runs: the "new" deploy is healthy
    answer = await hook(world, "/hooks/deploy", deploy("v1.2.2", "v1.2.1"))
    assert answer.status_code == 202
    await world.wait_message(lambda m: "v1.2.2 in production is healthy: 3 checks green"
                             in m.text)
    assert len(await store.history()) == 1


@pytest.mark.parametrize("world", [6.0], indirect=True)
async def test_countdown_cancelled_by_an_allowed_user_runs_nothing(
    world: SlackWorld, production: Sandbox, store: Store
) -> None:
    assert (await hook(world, "/hooks/deploy", deploy(stage="start_failed"))).status_code == 202
    countdown = await world.wait_message(lambda m: "is failing. Rolling back" in m.text)
    await world.click(MALLORY, countdown, Action.AUTO_CANCEL)
    await world.click(BOB, countdown, Action.AUTO_CANCEL)
    await world.wait_message(lambda m: "cancelled by <@U0BOB>" in m.text)
    await asyncio.sleep(6.5)  # past the deadline
    assert await store.history() == []
    assert production.running_image() == "azora-api:v1.2.3"
    audit = await store.audit_entries()
    assert any(a.kind == "refusal" and a.actor == MALLORY for a in audit)
    assert any(a.kind == "auto_cancel" and a.actor == BOB for a in audit)


@pytest.mark.parametrize("world", [30.0], indirect=True)
async def test_migration_failure_offers_the_migrations_procedure_but_does_not_run_it(
    world: SlackWorld, store: Store
) -> None:
    await hook(world, "/hooks/deploy", deploy(stage="migration_failed"))
    countdown = await world.wait_message(lambda m: "is failing. Rolling back" in m.text)
    text = message_text(countdown)
    assert "migrations are *not* rolled back automatically" in text
    assert "Roll back with migrations…" in text
    await world.click(ALICE, countdown, Action.AUTO_CANCEL)
    await world.wait_message(lambda m: "cancelled by" in m.text)
    assert await store.history() == []


async def test_forged_stale_replayed_malformed_and_unknown_are_refused(
    world: SlackWorld, store: Store
) -> None:
    assert (await hook(world, "/hooks/deploy", deploy(), secret="wrong")).status_code == 401
    stale = await hook(world, "/hooks/deploy", deploy(), timestamp=int(time.time()) - 600)
    assert stale.status_code == 401 and "seconds ago" in stale.json()["error"]
    bad = await hook(world, "/hooks/deploy", deploy(version="v1.2.3; rm -rf /"))
    assert bad.status_code == 400 and "version" in bad.json()["error"]
    unknown = await hook(world, "/hooks/deploy", deploy(environment="moon"))
    assert unknown.status_code == 400 and "moon" in unknown.json()["error"]
    assert (await hook(world, "/hooks/deploy", {}, raw=b"{not json")).status_code == 400
    # the same deploy twice is watched once; an identical request is a replay
    body = json.dumps(deploy("v1.2.3", "v1.2.2", "deployed")).encode()
    ts = int(time.time())
    async with httpx.AsyncClient() as client:
        headers = {"X-Rollbot-Timestamp": str(ts),
                   "X-Rollbot-Signature": sign(HOOK_SECRET, ts, body)}
        url = f"http://127.0.0.1:{world.service.port}/hooks/deploy"
        first = await client.post(url, content=body, headers=headers)
        replay = await client.post(url, content=body, headers=headers)
    assert (first.status_code, replay.status_code) == (202, 401)
    twice = await hook(world, "/hooks/deploy", deploy("v1.2.3", "v1.2.2", "deployed"),
                       timestamp=ts + 1)  # sent again by CI: a new signature, the same deploy
    assert twice.status_code == 200 and "watched once" in twice.json()["status"]
    refusals = [a for a in await store.audit_entries() if a.kind == "refusal"]
    assert len(refusals) >= 3


async def test_a_restart_during_the_countdown_waits_for_a_person(
    production: Sandbox, store: Store, tmp_path: Path
) -> None:
    async with slack_world(production, store.dsn, tmp_path, runbook_text=fast(30.0),
                           webhook_secret=HOOK_SECRET) as world:
        await hook(world, "/hooks/deploy", deploy(stage="start_failed"))
        await world.wait_message(lambda m: "is failing. Rolling back" in m.text)
        for task in list(world.service.auto._tasks):  # rollbot dies mid-countdown
            task.cancel()
    (tmp_path / "again").mkdir()
    async with slack_world(production, store.dsn, tmp_path / "again",
                           runbook_text=fast(30.0), webhook_secret=HOOK_SECRET) as world:
        notice = await world.wait_message(lambda m: "rollbot restarted while" in m.text)
        assert await store.history() == []  # nothing ran by itself
        await world.click(BOB, notice, Action.AUTO_ROLL_BACK_NOW)
        await world.wait_message(lambda m: "Rollback completed." in m.text, timeout=120)
        await world.click(BOB, notice, Action.AUTO_ROLL_BACK_NOW)  # a second click: nothing
        await world.service.front.wait_idle(60)
        assert len(await store.history()) == 1
        assert production.running_image() == "azora-api:v1.2.2"


@pytest.mark.parametrize("world", [0.0], indirect=True)
async def test_a_zero_countdown_rolls_back_at_once(world: SlackWorld, production: Sandbox,
                                                  store: Store) -> None:
    started = time.monotonic()
    await hook(world, "/hooks/deploy", deploy(stage="start_failed"))
    await world.wait_message(lambda m: "Rollback completed. Service restored to v1.2.2" in m.text,
                             timeout=120)
    assert time.monotonic() - started < 30
    assert production.running_image() == "azora-api:v1.2.2"
    [run] = await store.history()
    assert run.requested_by == "rollbot (automatic)"
