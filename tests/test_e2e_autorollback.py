"""CI announces a deploy; rollbot watches, counts down, and rolls back unless a person stops it."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.autorollback.contract import sign
from bot.model import ProcedureName, RunStatus
from bot.store.runs import Store
from handlers.ids import Action
from tests.sandbox import Sandbox
from tests.slack_world import (
    ALICE,
    BOB,
    INCIDENTS,
    MALLORY,
    SlackWorld,
    button_labels,
    message_text,
    slack_world,
)

pytestmark = pytest.mark.e2e
HOOK_SECRET = "ci-hook-secret-0123456789"
# A watch of 0.9 s, a look every 0.3 s: four looks, as a 30-minute watch has 181.
FAST = """
[environments.production.auto_rollback]
watch_minutes = 0.015
interval_seconds = 0.3
window_checks = 3
countdown_seconds = COUNTDOWN
trust_ci_failures = TRUST
"""


def fast(countdown: float, *, trust: bool = False) -> Any:
    def edit(text: str) -> str:
        table = FAST.replace("COUNTDOWN", str(countdown)).replace("TRUST", str(trust).lower())
        return text.replace("[environments.production.ssh]",
                            table.strip() + "\n[environments.production.ssh]", 1)
    return edit


TRUSTED = True  # a `world` parameter: CI's start_failed / migration_failed count down


@pytest.fixture
async def world(production: Sandbox, store: Store, tmp_path: Path,
                request: pytest.FixtureRequest) -> AsyncIterator[SlackWorld]:
    countdown, trust = getattr(request, "param", (2.0, False))
    async with slack_world(production, store.dsn, tmp_path,
                           runbook_text=fast(countdown, trust=trust),
                           webhook_secret=HOOK_SECRET) as w:
        yield w
        await w.service.auto.wait_idle(60)
        assert w.problems() == []


async def hook(world: SlackWorld, path: str, body: dict[str, Any], *,
               secret: str = HOOK_SECRET, timestamp: int | None = None,
               raw: bytes | None = None) -> httpx.Response:
    return await signed_post(world.service.port, path, body, secret=secret, timestamp=timestamp,
                             raw=raw)


async def signed_post(port: int, path: str, body: dict[str, Any], *,
                      secret: str = HOOK_SECRET, timestamp: int | None = None,
                      raw: bytes | None = None) -> httpx.Response:
    """What CI sends: the body, signed with the shared secret (deploy/hook-client.sh)."""
    data = raw if raw is not None else json.dumps(body).encode()
    ts = timestamp or int(time.time())
    async with httpx.AsyncClient() as client:
        return await client.post(
            f"http://127.0.0.1:{port}{path}", content=data,
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
    notice = await world.wait_message(
        lambda m: "Rollback completed. Service restored to v1.2.2" in m.text, timeout=120)
    assert production.running_image() == "azora-api:v1.2.2"
    [run] = await store.history()
    assert run.status is RunStatus.SUCCEEDED and run.requested_by == "rollbot (automatic)"
    # the notice's metadata, like a person's rollback; its live message is the countdown's
    assert notice.metadata == {"event_type": "rollback_completed", "event_payload": {
        "run_id": run.id, "environment": "production", "procedure": "simple",
        "outcome": "succeeded", "from_version": "v1.2.3", "to_version": "v1.2.2",
        "live_message_url": f"https://azora.slack.com/archives/{countdown.channel}/p"
                            f"{countdown.ts.replace('.', '')}"}}
    assert run.reason.startswith("automatic rollback of v1.2.3")
    # the run was shown in the countdown's message: its thread gets the verification checks
    shown = await store.approvals.front_ref_for_run(run.id)
    assert shown is not None and shown["ts"] == countdown.ts
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


async def test_a_good_deploy_is_watched_for_watch_minutes_and_left_alone(
    world: SlackWorld, production: Sandbox, store: Store
) -> None:
    # CI deploys v1.2.2 over v1.2.1 (rollbot has never seen production: it takes CI's word)
    production.deploy_by_hand("v1.2.2")
    answer = await hook(world, "/hooks/deploy", deploy("v1.2.2", "v1.2.1"))
    assert answer.status_code == 202
    assert "taken on CI's word" in answer.json()["previous_version"]
    done = await world.wait_message(lambda m: "v1.2.2 in production is healthy: 4 checks green"
                                    in m.text)
    # one message, edited in place at most once per 0.3 s interval
    edits = [c.at for c in world.emu.calls_to("chat.update") if c.params.get("ts") == done.ts]
    assert 2 <= len(edits) <= 5
    assert all(b - a >= 0.28 for a, b in itertools.pairwise(edits))
    assert await store.history() == []
    # rollbot saw v1.2.2 running: a later deploy must name it as the previous version
    forged = await hook(world, "/hooks/deploy", deploy("v1.2.4", "v1.2.1", "deployed"))
    assert forged.status_code == 400
    assert "rollbot last saw v1.2.2 running" in forged.json()["error"]


@pytest.mark.parametrize("world", [(6.0, TRUSTED)], indirect=True)
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


@pytest.mark.parametrize("world", [(30.0, TRUSTED)], indirect=True)
async def test_a_trusted_migration_failure_counts_down_and_offers_the_migrations_procedure(
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


@pytest.mark.parametrize("world", [(0.0, False)], indirect=True)
async def test_an_untrusted_migration_failure_is_offered_as_buttons_and_runs_nothing_by_itself(
    world: SlackWorld, production: Sandbox, store: Store
) -> None:
    answer = await hook(world, "/hooks/deploy", deploy(stage="migration_failed"))
    assert answer.status_code == 202 and answer.json()["status"].startswith("offered to a person")
    offer = await world.wait_message(lambda m: "failed to deploy" in m.text)
    text = message_text(offer)
    assert "Nothing rolls back by itself" in text and "trust_ci_failures" in text
    assert "Rolling back" not in text
    assert button_labels(offer) == ["Roll back with migrations…",
                                    "Roll back code only to v1.2.2", "Dismiss"]
    # a zero countdown would have rolled back at once: nothing runs, nothing changes
    await asyncio.sleep(3)
    assert await store.history() == []
    assert production.running_image() == "azora-api:v1.2.3"
    await world.click(BOB, offer, Action.AUTO_CANCEL)
    await world.wait_message(lambda m: "Rollback offered for v1.2.3 dismissed by <@U0BOB>"
                             in m.text)
    assert any(a.kind == "auto_cancel" and a.actor == BOB for a in await store.audit_entries())


async def test_the_spec_ci_order_a_failed_migration_is_rolled_back_with_its_migration(
    world: SlackWorld, production: Sandbox, store: Store
) -> None:
    # v1.2.2 serves and rollbot has seen it (on-call looked at the versions)
    production.deploy_by_hand("v1.2.2")
    await world.command(ALICE, "versions")
    await world.emu.wait_for(lambda: next((m for m in world.emu.ephemerals(INCIDENTS, ALICE)
                                           if "Running:* v1.2.2" in message_text(m)), None))
    # the spec's workflow: write v1.2.3 into the compose file, then migrate; migrating fails
    production.name_in_compose_file("v1.2.3")
    assert production.newest_migration() == "003_add_orders_discount"
    # CI cannot name a version rollbot never saw run, nor a newer one
    wrong = await hook(world, "/hooks/deploy", deploy(stage="migration_failed",
                                                      previous="v1.2.1"))
    assert wrong.status_code == 400
    assert wrong.json()["error"].startswith("previous_version v1.2.1 is not what ran before "
                                            "v1.2.3 in production: rollbot last saw v1.2.2 "
                                            "running")
    newer = await hook(world, "/hooks/deploy", deploy("v1.2.3", "v1.2.4",
                                                      stage="migration_failed"))
    assert newer.status_code == 400 and "is not lower than" in newer.json()["error"]
    refusals = [a.detail for a in await store.audit_entries() if a.kind == "refusal"]
    assert sum("previous_version" in d for d in refusals) == 2

    answer = await hook(world, "/hooks/deploy", deploy(stage="migration_failed"))
    assert answer.status_code == 202
    offer = await world.wait_message(lambda m: "failed to deploy" in m.text)
    await world.click(ALICE, offer, Action.NEXT_MIGRATIONS)
    card = await world.wait_card("Rollback production: v1.2.3 → v1.2.2")
    said = message_text(card)
    assert ("v1.2.2 still runs; the compose file already names v1.2.3 (a deploy that did not "
            "finish)") in said
    assert "Roll back to v1.2.2" in button_labels(card)
    await world.click(ALICE, card, Action.CONFIRM)
    # undoing a migration is a data change: a second person approves it
    waiting = await world.wait_message(
        lambda m: m.ts == card.ts and "Waiting for a second approver" in message_text(m))
    await world.click(BOB, waiting, Action.APPROVE_RESTORE)
    await world.wait_message(lambda m: "Rollback completed. Service restored to v1.2.2" in m.text,
                             timeout=180)
    assert production.running_image() == "azora-api:v1.2.2"
    assert production.compose_tag() == "v1.2.2"
    assert production.newest_migration() == "002_create_orders"
    [run] = await store.history()
    assert (run.status, run.procedure, run.from_version, run.to_version) == (
        RunStatus.SUCCEEDED, ProcedureName.MIGRATIONS, "v1.2.3", "v1.2.2")
    async with httpx.AsyncClient() as client:
        health = await client.get(f"http://127.0.0.1:{production.api_port}/health")
    assert health.status_code == 200
    allowed = await hook(world, "/hooks/deploy/allowed",
                         {"environment": "production", "version": "v1.2.3"})
    assert allowed.status_code == 409
    # the quarantine says why: the CI deploy that failed, not a generic follow-up
    assert allowed.json()["reason"].startswith("CI deploy #"), allowed.json()
    still = await hook(world, "/hooks/deploy/allowed",
                       {"environment": "production", "version": "v1.2.2"})
    assert still.status_code == 200


async def test_code_only_rollback_of_an_unfinished_deploy_converges_and_quarantines(
    world: SlackWorld, production: Sandbox, store: Store
) -> None:
    # CI wrote v1.2.3 into the compose file; its migrations failed; v1.2.2 still serves
    production.leave_unfinished_deploy(running="v1.2.2", named="v1.2.3")
    assert (await hook(world, "/hooks/deploy", deploy(stage="migration_failed"))).status_code \
        == 202
    offer = await world.wait_message(lambda m: "failed to deploy" in m.text)
    await world.click(MALLORY, offer, Action.AUTO_ROLL_BACK_NOW)  # not allowed: nothing runs
    await world.click(BOB, offer, Action.AUTO_ROLL_BACK_NOW)
    await world.wait_message(lambda m: "Rollback completed. Service restored to v1.2.2" in m.text,
                             timeout=180)
    assert production.running_image() == "azora-api:v1.2.2"
    assert production.compose_tag() == "v1.2.2"
    assert production.newest_migration() == "003_add_orders_discount"  # code only
    [run] = await store.history()
    assert (run.procedure, run.from_version, run.to_version, run.requested_by) == (
        ProcedureName.SIMPLE, "v1.2.3", "v1.2.2", "rollbot (automatic)")
    allowed = await hook(world, "/hooks/deploy/allowed",
                         {"environment": "production", "version": "v1.2.3"})
    assert allowed.status_code == 409
    assert any(a.kind == "refusal" and a.actor == MALLORY for a in await store.audit_entries())


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


async def test_a_restart_during_the_countdown_carries_it_on_to_its_own_deadline(
    production: Sandbox, store: Store, tmp_path: Path
) -> None:
    async with slack_world(production, store.dsn, tmp_path,
                           runbook_text=fast(20.0, trust=True),
                           webhook_secret=HOOK_SECRET) as world:
        await hook(world, "/hooks/deploy", deploy(stage="start_failed"))
        countdown = await world.wait_message(lambda m: "is failing. Rolling back" in m.text)
    # rollbot stopped mid-countdown: it handed the countdown over; started again, it takes it
    deadline = await store.pool.fetchval("SELECT deadline FROM deploys")
    (tmp_path / "again").mkdir()
    async with slack_world(production, store.dsn, tmp_path / "again",
                           runbook_text=fast(20.0, trust=True),
                           webhook_secret=HOOK_SECRET) as world:
        # (this Slack is a new emulator: the countdown's message is the first one's)
        end = time.monotonic() + 120
        while await store.pool.fetchval("SELECT state FROM deploys") != "rolled_back":
            assert time.monotonic() < end, "the countdown was not carried on"
            await asyncio.sleep(0.2)
        await world.service.auto.wait_idle(60)
        history = await store.history()
        assert len(history) == 1  # once, by itself, at the countdown's own deadline
        [run] = history
        assert run.status is RunStatus.SUCCEEDED and run.requested_by == "rollbot (automatic)"
        assert run.created_at >= deadline
        assert production.running_image() == "azora-api:v1.2.2"
        posted = [m.text for m in world.emu.messages(INCIDENTS)]
        assert not any("stopped watching or counting down" in text for text in posted)
    assert countdown.ts  # shown before the restart


@pytest.mark.parametrize("world", [(0.0, TRUSTED)], indirect=True)
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


REPO = Path(__file__).resolve().parent.parent


async def test_without_slack_rollbot_serve_rolls_a_bad_deploy_back_and_says_so_in_its_log(
    production: Sandbox, store: Store, tmp_path: Path
) -> None:
    # A runbook with no [slack] table and no Slack tokens: `rollbot serve` in its own process.
    runbook = tmp_path / "rollbot.toml"
    runbook.write_text(f'incident_logs_dir = "{tmp_path / "incident-logs"}"\n'
                       + fast(2.0)(production.runbook.read_text()))
    assert "[slack]" not in runbook.read_text()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLACK_", "ROLLBOT_", "DATABASE_URL", "PORT"))}
    env.update(DATABASE_URL=store.dsn, ROLLBOT_CONFIG=str(runbook), PORT="0",
               ROLLBOT_WEBHOOK_SECRET=HOOK_SECRET, ROLLBOT_DATA_DIR=str(tmp_path / "data"),
               PYTHONPATH=str(REPO))
    log_path = tmp_path / "rollbot.log"
    with log_path.open("wb") as log_file:
        serve = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1", cwd=tmp_path, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=log_file)
    try:
        assert serve.stdout is not None
        banner = (await asyncio.wait_for(serve.stdout.readline(), timeout=60)).decode()
        found = re.search(r"without Slack on http://127.0.0.1:(\d+)/hooks/deploy", banner)
        assert found, f"rollbot serve said {banner!r}; its log: {log_path.read_text()}"
        port = int(found.group(1))
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
            slack = await client.post(f"http://127.0.0.1:{port}/slack/events", content=b"{}")
            assert slack.status_code == 404  # Slack is not served at all

        # CI deployed the bad v1.2.3 over v1.2.2 and says so
        answer = await signed_post(port, "/hooks/deploy", deploy())
        assert answer.status_code == 202 and answer.json()["status"] == "watching"

        # the watch sees the health checks fail, counts down 2 s, and rolls back by itself
        deadline = time.monotonic() + 180
        while "rolled back:" not in log_path.read_text():
            assert serve.returncode is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            await asyncio.sleep(0.2)
        assert production.running_image() == "azora-api:v1.2.2"
        [run] = await store.history()
        assert (run.status, run.procedure, run.requested_by) == (
            RunStatus.SUCCEEDED, ProcedureName.SIMPLE, "rollbot (automatic)")
        allowed = await signed_post(port, "/hooks/deploy/allowed",
                                    {"environment": "production", "version": "v1.2.3"})
        assert allowed.status_code == 409
        assert allowed.json()["quarantined_by"] == "rollbot (automatic)"
    finally:
        if serve.returncode is None:
            serve.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(serve.wait(), timeout=60)
            except TimeoutError:
                serve.kill()
                await serve.wait()
    assert serve.returncode == 0
    # the log (at the default level, WARNING) names the countdown and the rollback
    log = log_path.read_text()
    assert "v1.2.3 in production is failing (health checks fail: 3 in a row" in log
    assert "Countdown: rolling back to v1.2.2 in 2 s" in log
    assert "rolling back production from v1.2.3 to v1.2.2 (procedure simple" in log
    assert f"rolled back: production runs v1.2.2 again (run #{run.id}); v1.2.3 is quarantined" \
        in log
