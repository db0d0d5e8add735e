"""Replicas share the automatic rollback: a dead one's work is carried on, SIGTERM hands over."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.model import RunStatus, StepStatus
from bot.store.runs import Store
from handlers.ids import Action
from tests.replicas import Replica, ReplicaWorld, two_replicas
from tests.sandbox import Sandbox
from tests.slack_world import ALICE, BOB, INCIDENTS, button_labels, header, message_text
from tests.test_e2e_slack import SLOW_COMPOSE

pytestmark = pytest.mark.e2e
HOOK_SECRET = "ci-hook-secret-0123456789"


def auto_rollback(*, countdown: float, watch_minutes: float = 0.015, interval: float = 0.3,
                  slow: bool = False) -> Callable[[str], str]:
    table = (f"[environments.production.auto_rollback]\nwatch_minutes = {watch_minutes}\n"
             f"interval_seconds = {interval}\nwindow_checks = 3\n"
             f"countdown_seconds = {countdown}\ntrust_ci_failures = true\n")

    def edit(text: str) -> str:
        text = text.replace("[environments.production.ssh]",
                            table + "[environments.production.ssh]", 1)
        if slow:  # every docker-compose call takes 3 s longer: time to act while a step runs
            assert 'command = "docker-compose"' in text
            text = text.replace('command = "docker-compose"', SLOW_COMPOSE)
        return text
    return edit


def deploy(stage: str, version: str = "v1.2.3", previous: str = "v1.2.2") -> dict[str, Any]:
    return {"environment": "production", "version": version, "previous_version": previous,
            "stage": stage, "commit": "abc1234", "actor": "ci-bot",
            "run_url": "https://ci.example.com/run/1"}


@pytest.fixture
def replicas_of(production: Sandbox, store: Store, tmp_path: Path
                ) -> Callable[..., Any]:
    def start(**config: Any) -> Any:
        return two_replicas(production, store.dsn, tmp_path, webhook_secret=HOOK_SECRET,
                            runbook_text=auto_rollback(**config))
    return start


async def lease_of(store: Store, world: ReplicaWorld) -> tuple[Replica | None, dict[str, Any]]:
    """The replica holding the (one) deploy's live lease, and the deploy's row."""
    row = await store.pool.fetchrow("SELECT *, lease_until > now() AS live FROM deploys")
    assert row is not None, "no deploy recorded"
    holder = row["lease_holder"] if row["live"] else None
    return (world.by_pid(int(holder.split(":")[1])) if holder else None), dict(row)


async def wait_holder(store: Store, world: ReplicaWorld, other_than: Replica | None = None,
                      timeout: float = 30) -> Replica:
    deadline = time.monotonic() + timeout
    while True:
        holder, _ = await lease_of(store, world)
        if holder is not None and holder is not other_than:
            return holder
        assert time.monotonic() < deadline, f"no replica took the lease:\n{world.logs()}"
        await asyncio.sleep(0.1)


async def test_killing_the_replica_counting_down_the_other_rolls_back_once_at_the_deadline(
    replicas_of: Callable[..., Any], production: Sandbox, store: Store
) -> None:
    async with replicas_of(countdown=25) as world:
        # CI reports the deploy failed to start: a 25 s countdown on the replica CI reached
        answer = await world.hook("/hooks/deploy", deploy("start_failed"))
        assert answer.status_code == 202, answer.text
        countdown = await world.wait_message(lambda m: "Rolling back to v1.2.2 in 25 s" in m.text,
                                             channel=INCIDENTS)
        holder = await wait_holder(store, world)
        _, row = await lease_of(store, world)
        deadline = row["deadline"]
        holder.kill()  # the process holding the countdown dies at once
        killed = time.monotonic()
        other = world.other(holder)

        # the other replica takes the lease and edits the same message: the time left, not 25 s
        assert await wait_holder(store, world, other_than=holder) is other
        assert time.monotonic() - killed < 15
        carried = await world.wait_message(
            lambda m: m.ts == countdown.ts and "Carried on by another rollbot replica"
            in message_text(m), channel=INCIDENTS)
        left = float(carried.text.split(" in ")[-1].split(" s")[0])
        assert 5 <= left <= 21, carried.text

        # it rolls back once, at the countdown's own deadline
        await world.wait_message(lambda m: "Rollback completed. Service restored to v1.2.2"
                                 in m.text, channel=INCIDENTS, timeout=180)
        await asyncio.sleep(3)  # a second rollback or notice would show by now
        assert production.running_image() == "azora-api:v1.2.2"
        [run] = await store.history()
        assert (run.status, run.requested_by) == (RunStatus.SUCCEEDED, "rollbot (automatic)")
        assert deadline <= run.created_at <= deadline + timedelta(seconds=9), (
            f"run began at {run.created_at}, the countdown ended at {deadline}")
        notices = [m for m in world.emu.messages(INCIDENTS)
                   if "Rollback completed. Service restored" in m.text]
        assert len(notices) == 1
        assert (await lease_of(store, world))[1]["state"] == "rolled_back"


async def test_a_watch_taken_over_after_sigkill_continues_for_its_time_left_and_ends_healthy(
    replicas_of: Callable[..., Any], production: Sandbox, store: Store
) -> None:
    production.deploy_by_hand("v1.2.2")  # CI deployed v1.2.2 over v1.2.1: a healthy version
    async with replicas_of(countdown=30, watch_minutes=0.5, interval=1.0) as world:
        answer = await world.hook("/hooks/deploy", deploy("deployed", "v1.2.2", "v1.2.1"))
        assert answer.status_code == 202 and answer.json()["status"] == "watching"
        watching = await world.wait_message(lambda m: "Watching for 0.5 min" in m.text,
                                            channel=INCIDENTS)
        holder = await wait_holder(store, world)
        await world.wait_message(lambda m: m.ts == watching.ts and "Check 3 of 31"
                                 in message_text(m), channel=INCIDENTS)
        _, row = await lease_of(store, world)
        holder.kill()
        other = world.other(holder)
        assert await wait_holder(store, world, other_than=holder) is other

        # the same message goes on, and the watch ends when the row says, not 30 s later
        done = await world.wait_message(
            lambda m: m.ts == watching.ts and "v1.2.2 in production is healthy" in m.text,
            channel=INCIDENTS, timeout=60)
        ended = await store.pool.fetchval("SELECT now()")
        assert row["watch_until"] - timedelta(seconds=2) <= ended \
            <= row["watch_until"] + timedelta(seconds=6), (ended, row["watch_until"])
        assert "Nothing to roll back" in done.text
        _, row = await lease_of(store, world)
        assert row["state"] == "healthy"
        assert await store.history() == []


async def test_a_replicas_restart_leaves_the_others_countdown_alone(
    replicas_of: Callable[..., Any], production: Sandbox, store: Store
) -> None:
    async with replicas_of(countdown=60) as world:
        await world.hook("/hooks/deploy", deploy("start_failed"))
        countdown = await world.wait_message(lambda m: "Rolling back to v1.2.2 in 60 s" in m.text,
                                             channel=INCIDENTS)
        holder = await wait_holder(store, world)
        restarted = world.other(holder)
        assert await restarted.stop() == 0
        await world.restart(restarted)
        await asyncio.sleep(5)  # the restarted replica polls the leases twice meanwhile
        assert await wait_holder(store, world) is holder
        _, row = await lease_of(store, world)
        assert row["state"] == "countdown"
        shown = world.emu.message(INCIDENTS, countdown.ts)
        assert shown is not None and "Carried on" not in message_text(shown)
        posted = [m.text for m in world.emu.messages(INCIDENTS)]
        assert not any("stopped watching or counting down" in text for text in posted)
        # Bob cancels on whichever replica haproxy picks: the countdown ends, nothing ran
        await world.click(BOB, countdown, Action.AUTO_CANCEL)
        await world.wait_message(lambda m: "cancelled by <@U0BOB>" in m.text, channel=INCIDENTS)
        assert await store.history() == []
        assert production.running_image() == "azora-api:v1.2.3"


async def draining(replica: Replica) -> int:
    """What the replica's /healthz answers once it began to stop (503), polled briefly."""
    async with httpx.AsyncClient(timeout=2) as client:
        for _ in range(40):
            status = (await client.get(f"{replica.url}/healthz")).status_code
            if status != 200:
                return status
            await asyncio.sleep(0.025)
    return status


@pytest.fixture
async def slow_replicas(production: Sandbox, store: Store, tmp_path: Path
                        ) -> AsyncIterator[ReplicaWorld]:
    async with two_replicas(production, store.dsn, tmp_path, webhook_secret=HOOK_SECRET,
                            runbook_text=auto_rollback(countdown=120, slow=True)) as world:
        yield world


async def test_sigterm_during_a_rollback_ends_the_step_stops_the_run_and_hands_leases_over(
    slow_replicas: ReplicaWorld, production: Sandbox, store: Store
) -> None:
    world = slow_replicas
    r0, r1 = world["r0"], world["r1"]
    # r0 counts down a failed deploy (CI reached it) and runs Alice's rollback
    await world.hook("/hooks/deploy", deploy("start_failed"), to=r0)
    countdown = await world.wait_message(lambda m: "Rolling back to v1.2.2 in 120 s" in m.text,
                                         channel=INCIDENTS)
    assert await wait_holder(store, world) is r0
    to_r0 = world.sender_to(r0)
    ack = await to_r0.slash_command(ALICE, INCIDENTS, "v1.2.2 v1.2.3 fails health")
    assert ack.status == 200
    card = await world.wait_message(
        lambda m: "Rollback production: v1.2.3 → v1.2.2" in message_text(m), channel=INCIDENTS)
    await to_r0.block_action(ALICE, card.channel, card.ts, Action.CONFIRM.value)
    live = await world.wait_message(lambda m: m.ts == card.ts and "⏳ 2. Stop services"
                                    in message_text(m), channel=INCIDENTS, timeout=120)

    r0.terminate()  # SIGTERM while "Stop services" runs
    stopped = time.monotonic()
    assert await draining(r0) == 503  # the load balancer takes it out of rotation
    assert await wait_holder(store, world, other_than=r0) is r1
    assert time.monotonic() - stopped < 4  # handed over at once, not after the lease's 10 s
    await world.balancer.wait_serving({"r1"})
    assert await r0.wait_exit(90) == 0

    # the step running finished; the run stopped before the next one and says why
    [listed] = await store.history()
    run = await store.get_run(listed.id)
    assert run is not None and run.status is RunStatus.CANCELLED
    assert "rollbot was shutting down." in run.message
    done = {s.title: s.status for s in run.steps}
    assert done["Stop services"] is StepStatus.SUCCEEDED, done
    assert done["Switch compose file to v1.2.2"] is StepStatus.SKIPPED, done
    final = await world.wait_message(lambda m: m.ts == live.ts and header(m).startswith("🔴"),
                                     channel=INCIDENTS)
    text = message_text(final)
    assert "Stopped before 'Switch compose file to v1.2.2': rollbot was shutting down." \
        in text
    assert button_labels(final) == ["Resume rollback", "Put back what ran before"]
    assert "rollbot: stopping" in r0.log()

    # r1 took the countdown over; Bob cancels it there, and resumes the rollback on r1
    await world.wait_message(lambda m: m.ts == countdown.ts and "Carried on" in message_text(m),
                             channel=INCIDENTS)
    await world.click(BOB, countdown, Action.AUTO_CANCEL)
    await world.wait_message(lambda m: "cancelled by <@U0BOB>" in m.text, channel=INCIDENTS)
    await world.click(BOB, final, Action.RECOVERY_RESUME)
    await world.wait_message(lambda m: header(m).startswith("✅ Rolled back production to v1.2.2"),
                             channel=INCIDENTS, timeout=180)
    assert production.running_image() == "azora-api:v1.2.2"


async def test_without_slack_a_dead_replicas_countdown_is_carried_on_and_told_in_the_log(
    production: Sandbox, store: Store, tmp_path: Path
) -> None:
    async with two_replicas(production, store.dsn, tmp_path, webhook_secret=HOOK_SECRET,
                            runbook_text=auto_rollback(countdown=20), slack=False) as world:
        answer = await world.hook("/hooks/deploy", deploy("start_failed"))
        assert answer.status_code == 202, answer.text
        holder = await wait_holder(store, world)
        await world.wait_log(holder, "Countdown: rolling back to v1.2.2 in 20 s")
        holder.kill()
        other = world.other(holder)
        log = await world.wait_log(other, "rolled back: production runs v1.2.2 again",
                                   timeout=180)
        assert "carried on after the rollbot replica counting down stopped: rolling back " \
               "production to v1.2.2 in" in log
        assert production.running_image() == "azora-api:v1.2.2"
        assert len(await store.history()) == 1
