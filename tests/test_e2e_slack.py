"""On-call drives a rollback from Slack; the sandbox host really rolls back.

Slack is the emulator (real HTTP, signed requests); rollbot serves it for real; sshd, Docker,
compose and PostgreSQL are the sandbox's.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from bot.model import RunStatus
from bot.store.runs import Store
from handlers.ids import Action, Block, Field
from tests.sandbox import BACKUP_COUNTS, CURRENT_COUNTS, GOOD_BACKUP, Sandbox
from tests.slack_world import (
    ALICE,
    BOB,
    CAROL,
    INCIDENTS,
    MALLORY,
    RANDOM,
    SlackWorld,
    button_labels,
    header,
    message_text,
    slack_world,
)
from tests.test_e2e_metrics import sample, scrape

pytestmark = pytest.mark.e2e


@pytest.fixture
async def world(production: Sandbox, store: Store, tmp_path: Path) -> AsyncIterator[SlackWorld]:
    async with slack_world(production, store.dsn, tmp_path) as w:
        yield w
        assert w.problems() == [], w.problems()  # every message rollbot sent was valid


SLOW_COMPOSE = 'command = "sh -c \'sleep 3; exec docker-compose \\"$@\\"\' docker-compose"'


@pytest.fixture
async def slow_world(production: Sandbox, store: Store, tmp_path: Path
                     ) -> AsyncIterator[SlackWorld]:
    """Every docker-compose call takes 3 s longer: time to click while a step runs."""
    def slow(text: str) -> str:
        assert 'command = "docker-compose"' in text
        return text.replace('command = "docker-compose"', SLOW_COMPOSE)
    async with slack_world(production, store.dsn, tmp_path, runbook_text=slow) as w:
        yield w
        assert w.problems() == [], w.problems()


async def roll_back_by_slack(world: SlackWorld, text: str = "v1.2.2 v1.2.3 fails health"
                             ) -> tuple[str, str]:
    ack = await world.command(ALICE, text)
    assert ack.acked_in_time, ack
    card = await world.wait_card("Rollback production: v1.2.3 → v1.2.2")
    click = await world.click(ALICE, card, Action.CONFIRM)
    assert click.acked_in_time
    return card.channel, card.ts


async def wait_final(world: SlackWorld, ts: str, prefix: str = "✅ Rolled back") -> str:
    msg = await world.wait_message(lambda m: m.ts == ts and header(m).startswith(prefix),
                                   timeout=120)
    return message_text(msg)


async def test_rollback_from_slack_card_confirm_live_message_and_notice(
    world: SlackWorld, production: Sandbox, store: Store
) -> None:
    channel, ts = await roll_back_by_slack(world)
    final = await wait_final(world, ts)
    assert "✅ 7. Confirm all services are up" in final
    assert production.running_image() == "azora-api:v1.2.2"
    notice = await world.wait_message(lambda m: "Rollback completed." in m.text)
    assert notice.text.startswith("Rollback completed. Service restored to v1.2.2. "
                                  "Investigating root cause. ETA for fix: TBD")
    assert button_labels(notice) == ["Set ETA"]
    # command output went into the live message's thread
    thread = world.emu.thread(channel, ts)
    assert any("Stop services" in m.text and "Stopping" in m.text for m in thread)
    # the live message was edited in place, never more than once a second
    updates = [c.at for c in world.emu.calls_to("chat.update") if c.params.get("ts") == ts]
    assert len(updates) >= 2
    assert all(b - a >= 0.95 for a, b in itertools.pairwise(updates))
    runs = await store.history(limit=5)
    assert [r.status for r in runs] == [RunStatus.SUCCEEDED]
    assert runs[0].requested_by == ALICE
    # the run knows its live message's permalink (the dashboard and events link to it)
    assert runs[0].live_message_url == (
        f"https://azora.slack.com/archives/{channel}/p{ts.replace('.', '')}")
    await world.command(BOB, "history")
    said = await world.emu.wait_for(lambda: next(
        (m for m in world.emu.ephemerals(INCIDENTS, BOB) if "Last rollbacks" in message_text(m)),
        None))
    assert f"/archives/{channel}/p{ts.replace('.', '')}|live message" in message_text(said)
    await world.command(BOB, "status")
    status = await world.emu.wait_for(lambda: next(
        (m for m in world.emu.ephemerals(INCIDENTS, BOB)
         if "Pending verification checks" in message_text(m)), None))
    assert "Immediate check of rollback #1 due" in message_text(status)
    print(world.transcript())


async def test_set_eta_updates_the_notice(world: SlackWorld) -> None:
    _, ts = await roll_back_by_slack(world)
    await wait_final(world, ts)
    notice = await world.wait_message(lambda m: "Rollback completed." in m.text)
    await world.click(BOB, notice, Action.SET_ETA)
    view = await world.emu.wait_for(lambda: next(iter(world.emu.views(BOB, open_only=True)),
                                                 None))
    result = await world.sender.view_submission(BOB, view.id, {
        Block.ETA.value: {Field.ETA.value: "2 hours"}})
    assert result.status == 200
    await world.wait_message(lambda m: m.ts == notice.ts and "ETA for fix: 2 hours" in m.text)


async def test_restore_needs_the_database_name_and_a_second_person(
    world: SlackWorld, production: Sandbox, store: Store
) -> None:
    await world.command(BOB, f"v1.2.2 --restore {GOOD_BACKUP} orders corrupted")
    card = await world.wait_card("Rollback production: v1.2.3 → v1.2.2")
    assert "will be lost" in message_text(card)
    assert button_labels(card)[0] == "Restore database and roll back to v1.2.2"
    await world.click(BOB, card, Action.CONFIRM_RESTORE)
    view = await world.emu.wait_for(lambda: next(iter(world.emu.views(BOB, open_only=True)),
                                                 None))
    wrong = await world.sender.view_submission(BOB, view.id, {
        Block.DB_NAME.value: {Field.DB_NAME.value: "azora_production"}})
    assert wrong.json["response_action"] == "errors"
    assert "not the database name" in wrong.json["errors"][Block.DB_NAME.value]
    right = await world.sender.view_submission(BOB, view.id, {
        Block.DB_NAME.value: {Field.DB_NAME.value: "azora_prod"}})
    assert right.status == 200
    waiting = await world.wait_message(
        lambda m: m.ts == card.ts and "Waiting for a second approver" in message_text(m))
    # the requester cannot be the second person, and a non-approver cannot approve
    await world.click(BOB, waiting, Action.APPROVE_RESTORE)
    await world.click(ALICE, waiting, Action.APPROVE_RESTORE)
    await world.emu.wait_for(lambda: any("second person" in message_text(m)
                                         for m in world.emu.ephemerals(INCIDENTS, BOB)))
    await world.emu.wait_for(lambda: any("restore approvers" in message_text(m)
                                         for m in world.emu.ephemerals(INCIDENTS, ALICE)))
    assert production.row_counts() == CURRENT_COUNTS  # nothing destructive so far
    assert await store.history() == []
    await world.click(CAROL, waiting, Action.APPROVE_RESTORE)  # on-call group, an approver
    final = await wait_final(world, card.ts)
    assert f"<@{BOB}>, <@{CAROL}>" in final  # both people named on the live message
    assert production.row_counts() == BACKUP_COUNTS
    assert production.running_image() == "azora-api:v1.2.2"
    [run] = await store.history()
    assert run.procedure.value == "restore"
    refusals = [a for a in await store.audit_entries() if a.kind == "refusal"]
    assert any("does not match" in a.detail for a in refusals)
    assert any(a.actor == BOB and "second person" in a.detail for a in refusals)
    assert any(a.actor == ALICE and "restore approvers" in a.detail for a in refusals)


async def test_forged_stale_and_replayed_requests_are_refused(
    world: SlackWorld, production: Sandbox, store: Store
) -> None:
    forged = await world.command(ALICE, "v1.2.2", bad_signature=True)
    stale = await world.command(ALICE, "v1.2.2", timestamp=int(asyncio.get_running_loop()
                                                                .time() * 0) + 1_000_000)
    assert (forged.status, stale.status) == (401, 401)
    good = await world.command(ALICE, "status")
    assert good.status == 200
    replayed = await world.sender.replay(good.request)
    assert replayed.status == 401
    await asyncio.sleep(0.2)
    assert world.posted() == []  # nothing posted
    assert await store.history() == []  # nothing run
    details = [a.detail for a in await store.audit_entries() if a.kind == "refusal"]
    assert sum("bad signature" in d for d in details) == 2
    assert any("replayed" in d for d in details)


@pytest.mark.parametrize(("user", "channel", "text", "says"), [
    (MALLORY, INCIDENTS, "v1.2.2", "not on rollbot's list"),
    (ALICE, RANDOM, "v1.2.2", "only takes commands in"),
    (ALICE, INCIDENTS, "v1.2.2; rm -rf /", "not a release version"),
])
async def test_refusals_are_ephemeral_audited_and_run_nothing(
    world: SlackWorld, production: Sandbox, store: Store, user: str, channel: str, text: str,
    says: str
) -> None:
    ack = await world.command(user, text, channel=channel)
    assert ack.acked_in_time
    said = await world.emu.wait_for(lambda: next(
        (m for m in world.emu.ephemerals(channel, user) if says in message_text(m)), None))
    assert said.ephemeral_to == user
    assert world.posted(channel) == []
    assert await store.history() == []
    assert any(a.kind == "refusal" and a.actor == user for a in await store.audit_entries())
    assert production.running_image() == "azora-api:v1.2.3"


async def test_double_clicks_and_retries_start_exactly_one_run(
    world: SlackWorld, production: Sandbox, store: Store
) -> None:
    await world.command(ALICE, "v1.2.2")
    card = await world.wait_card("Rollback production: v1.2.3 → v1.2.2")
    first, second = await asyncio.gather(world.click(ALICE, card, Action.CONFIRM),
                                         world.click(BOB, card, Action.CONFIRM))
    retried = await world.sender.retry(first.request, retry_num=1, retry_reason="http_timeout")
    assert all(r.status == 200 for r in (first, second, retried))
    await wait_final(world, card.ts)
    await world.service.front.wait_idle(60)
    assert len(await store.history()) == 1
    told = world.emu.ephemerals(INCIDENTS, ALICE) + world.emu.ephemerals(INCIDENTS, BOB)
    assert any("already started" in m.text for m in told)


async def test_a_second_rollback_during_a_run_shows_the_lock_holder(
    slow_world: SlackWorld, production: Sandbox, store: Store
) -> None:
    world = slow_world
    _, ts = await roll_back_by_slack(world)
    await world.wait_message(lambda m: m.ts == ts and "⏳ 2. Stop services" in message_text(m))
    await world.command(BOB, "v1.2.1 --emergency")
    second = await world.wait_message(lambda m: "held by" in message_text(m), timeout=60)
    assert second.ts != ts
    assert f"held by {ALICE}: run #" in message_text(second)
    assert button_labels(second) == ["Dismiss"]  # no primary button
    await wait_final(world, ts)
    assert len(await store.history()) == 1


async def test_cancel_on_the_live_message_stops_before_the_next_step(
    slow_world: SlackWorld, production: Sandbox, store: Store
) -> None:
    world = slow_world
    _, ts = await roll_back_by_slack(world)
    live = await world.wait_message(
        lambda m: m.ts == ts and "⏳ 2. Stop services" in message_text(m))
    await world.click(BOB, live, Action.CANCEL_RUN)
    final = await wait_final(world, ts, prefix="🔴")  # production is DOWN (tests/test_e2e_cancel)
    assert "Cancelled by U0BOB before 'Switch compose file to v1.2.2'" in final
    assert "services STOPPED; compose file still names v1.2.3" in final
    [run] = await store.history()
    assert run.status is RunStatus.CANCELLED
    notice = await world.wait_message(lambda m: "did not complete" in m.text)
    assert "cancelled" in notice.text


async def test_rate_limited_updates_still_end_exact(world: SlackWorld,
                                                    production: Sandbox) -> None:
    world.emu.rate_limit(method="chat.update", retry_after=2, count=3)
    _, ts = await roll_back_by_slack(world)
    final = await wait_final(world, ts)
    assert production.running_image() == "azora-api:v1.2.2"
    assert "Rolled back to v1.2.2: api runs v1.2.2, healthy, all services up." in final
    limited = [c for c in world.emu.calls_to("chat.update") if c.status == 429]
    assert len(limited) == 3
    after = [c.at for c in world.emu.calls_to("chat.update") if c.at > limited[0].at]
    assert after and after[0] - limited[0].at >= 1.9  # Retry-After honoured


async def test_slack_down_during_the_run_still_rolls_back_and_catches_up(
    world: SlackWorld, production: Sandbox
) -> None:
    await world.command(ALICE, "v1.2.2")
    card = await world.wait_card("Rollback production: v1.2.3 → v1.2.2")
    await world.click(ALICE, card, Action.CONFIRM)
    world.emu.fail_all(500)
    async with httpx.AsyncClient() as client:
        async def healthy() -> bool:
            try:
                r = await client.get(f"http://127.0.0.1:{production.api_port}/health")
            except httpx.HTTPError:  # services are down for a moment during the rollback
                return False
            return r.status_code == 200
        for _ in range(300):
            if await healthy() and production.running_image() == "azora-api:v1.2.2":
                break
            await asyncio.sleep(0.1)
    assert production.running_image() == "azora-api:v1.2.2"
    world.emu.fail_all(None)
    await wait_final(world, card.ts)
    await world.wait_message(lambda m: "Rollback completed." in m.text, timeout=60)


async def test_mention_works_like_the_command_and_retried_events_count_once(
    world: SlackWorld
) -> None:
    sent = await world.sender.app_mention(ALICE, INCIDENTS, "<@U0ROLLBOT> v1.2.2 bad deploy")
    assert sent.status == 200
    await world.sender.retry(sent.request, retry_num=1, retry_reason="http_timeout")
    card = await world.wait_card("Rollback production: v1.2.3 → v1.2.2")
    await asyncio.sleep(1.5)
    cards = [m for m in world.posted() if header(m).startswith("Rollback production")]
    assert [c.ts for c in cards] == [card.ts]


async def test_healthz(world: SlackWorld) -> None:
    async with httpx.AsyncClient() as client:
        r = await client.get(f"http://127.0.0.1:{world.service.port}/healthz")
    assert r.status_code == 200 and r.json() == {"ok": True}


def _verify_quickly(minutes: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        marker = "[environments.production.ssh]"
        return text.replace(marker, f"verify_after_minutes = {minutes}\n{marker}", 1)
    return edit


async def test_verification_is_announced_and_answers_are_recorded(
    production: Sandbox, store: Store, tmp_path: Path
) -> None:
    async with slack_world(production, store.dsn, tmp_path,
                           runbook_text=_verify_quickly("[0.02]")) as world:
        channel, ts = await roll_back_by_slack(world)
        await wait_final(world, ts)
        status = await world.wait_message(
            lambda m: m.text.startswith("✅ Immediate verification of rollback #"), timeout=60)
        assert "all " in status.text and "checks green" in status.text
        thread = world.emu.thread(channel, ts)
        assert any("Immediate verification" in m.text and "Health" in m.text for m in thread)
        await world.click(BOB, status, Action.VERDICT_HEALTHY)
        await world.emu.wait_for(lambda: any("looks *healthy*" in message_text(m)
                                             for m in world.emu.ephemerals(INCIDENTS, BOB)))
        assert any(a.kind == "verdict" and a.actor == BOB for a in await store.audit_entries())
        assert world.problems() == []


async def test_a_failed_check_mentions_people_and_offers_next_steps(
    production: Sandbox, store: Store, tmp_path: Path
) -> None:
    async with slack_world(production, store.dsn, tmp_path,
                           runbook_text=_verify_quickly("[0.06]")) as world:
        _, ts = await roll_back_by_slack(world)
        await wait_final(world, ts)
        text = production.compose_file.read_text().replace("azora-api:v1.2.2",
                                                           "azora-api:v1.2.3")
        production.compose_file.write_text(text)  # the bad release is back
        await asyncio.to_thread(production.compose_up)
        status = await world.wait_message(
            lambda m: m.text.startswith("❌ Immediate verification"), timeout=60)
        assert f"<@{ALICE}>" in status.text and "<!subteam^S0ONCALL>" in status.text
        assert button_labels(status) == [
            "Run the check again", "Emergency rollback to v1.2.2",
            "Restore database from backup", "Healthy", "Regressed"]
        # someone puts v1.2.2 back by hand and runs the check again: green, announced, counted
        production.compose_file.write_text(text.replace("azora-api:v1.2.3", "azora-api:v1.2.2"))
        await asyncio.to_thread(production.compose_up)
        await world.click(BOB, status, Action.VERIFY_AGAIN)
        again = await world.wait_message(
            lambda m: m.text.startswith("✅ Immediate verification of rollback #"), timeout=60)
        assert "checks green" in again.text
        samples = await scrape(world)
        for outcome in ("failed", "passed"):
            assert sample(samples, "rollbot_verification_checks_total", tier="immediate",
                          outcome=outcome) == 1
        assert world.problems() == []


async def test_report_uploaded_and_checklist_ticked(
    production: Sandbox, store: Store, tmp_path: Path
) -> None:
    async with slack_world(production, store.dsn, tmp_path) as world:
        _, ts = await roll_back_by_slack(world)
        await wait_final(world, ts)
        checklist = await world.wait_message(
            lambda m: m.text.startswith("Rollback checklist, run #"), timeout=60)
        text = message_text(checklist)
        assert "☑️ Stop services · _rollbot (step 'Stop services')" in text
        assert "☑️ Ensure SSH access to production" in text
        assert "☑️ Notify stakeholders · _rollbot (stakeholder notice posted)" in text
        assert "☑️ Document incident" in text
        assert "⬜ Schedule post-mortem" in text
        await world.sender.block_action(BOB, checklist.channel, checklist.ts,
                                        f"{Action.CHECKLIST_TOGGLE.value}.postmortem")
        await world.wait_message(lambda m: m.ts == checklist.ts
                                 and f"☑️ Schedule post-mortem · _<@{BOB}>" in message_text(m))
        [uploaded] = world.emu.files()
        assert uploaded.name.startswith("rollback-") and uploaded.name.endswith(".md")
        body = uploaded.content.decode()
        assert body.startswith("# Rollback Report")
        assert "- Deployment version: v1.2.3" in body and "- Rollback to version: v1.2.2" in body
        assert (tmp_path / "incident-logs" / uploaded.name).read_text() == body
        run_id = (await store.history())[0].id
        assert await store.report(run_id) == body
    # rollbot restarts: the human tick is still there
    from bot.post_rollback.checklist import ChecklistStore
    from handlers.blocks.after_run import checklist_message
    ticks = await ChecklistStore(store.pool).ticks(run_id)
    assert ticks["postmortem"].done_by == BOB and not ticks["postmortem"].automatic
    assert "☑️ Schedule post-mortem" in str(checklist_message(run_id, ticks))


async def test_assess_answers_with_the_decision_matrix_and_opens_the_card(
    world: SlackWorld, store: Store
) -> None:
    from handlers.ids import AssessAction, AssessBlock, AssessField

    def pick(value: str) -> dict[str, object]:
        return {"type": "radio_buttons", "selected_option": {"value": value}}

    await world.command(ALICE, "assess")
    view = await world.emu.wait_for(lambda: next(iter(world.emu.views(ALICE, open_only=True)),
                                                 None))
    answers = {
        AssessBlock.ENVIRONMENT.value: {AssessField.ENVIRONMENT.value: "production"},
        AssessBlock.SCENARIO.value: {AssessField.SCENARIO.value: {
            "type": "static_select", "selected_option": {"value": "service_down"}}},
        AssessBlock.USERS_AFFECTED.value: {AssessField.USERS_AFFECTED.value: pick("yes")},
        AssessBlock.ROOT_CAUSE_KNOWN.value: {AssessField.ROOT_CAUSE_KNOWN.value: pick("no")},
        AssessBlock.DATA_LOSS.value: {AssessField.DATA_LOSS.value: pick("no")},
        AssessBlock.PREVIOUS_STABLE.value: {AssessField.PREVIOUS_STABLE.value: pick("yes")},
        AssessBlock.MINUTES_TO_FIX.value: {AssessField.MINUTES_TO_FIX.value: "soon"},
    }
    bad = await world.sender.view_submission(ALICE, view.id, answers)
    assert bad.json["response_action"] == "errors"
    answers[AssessBlock.MINUTES_TO_FIX.value] = {AssessField.MINUTES_TO_FIX.value: "45"}
    ok = await world.sender.view_submission(ALICE, view.id, answers)
    assert ok.status == 200 and not ok.json, ok.json
    verdict = await world.wait_message(lambda m: "Decision matrix" in m.text)
    assert "CRITICAL" in message_text(verdict)
    await world.sender.block_action(ALICE, INCIDENTS, verdict.ts, AssessAction.OPEN_CARD.value)
    card = await world.wait_card("🚨 Rollback production: v1.2.3 → v1.2.2")
    assert "EMERGENCY" in message_text(card)


async def test_a_click_for_an_unknown_card_is_answered_not_dropped(world: SlackWorld) -> None:
    await world.command(ALICE, "v1.2.2")
    card = await world.wait_card("Rollback production: v1.2.3 → v1.2.2")
    click = await world.click(ALICE, card, Action.CANCEL_CARD, value='{"card":"0123456789abcdef"}')
    forged = await world.click(ALICE, card, Action.CANCEL_CARD, value='{"card":"../etc"}')
    assert click.status == 200 and click.elapsed < 2.5 and forged.status == 200

    def both_answered() -> list[str] | None:  # in either order: each click's work runs alone
        texts = [m.text for m in world.emu.ephemerals(INCIDENTS, ALICE)]
        wanted = ("unknown to rollbot", "did not write")
        return texts if all(any(w in t for t in texts) for w in wanted) else None

    said = await world.emu.wait_for(both_answered)
    assert [sum(w in t for t in said) for w in ("unknown to rollbot", "did not write")] == [1, 1]
