"""A fleet rollback as people see it: one line per host in Slack and the terminal, within limits."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console
from slack_sdk.web.async_client import AsyncWebClient

from bot.events import RunEvent, RunFinished, RunStarted, StepInfo, StepStarted
from bot.fleet_view import FleetShape, HostBoard, HostPhase, fleet_shape, who_runs_what
from bot.model import Check, HostOutcome, ProcedureName, RunStatus
from bot.preflight import Preflight
from bot.service import Plan
from bot.terminal.render import TerminalProgress, render_plan
from handlers.blocks import Blocks
from handlers.blocks.cards import card_body, card_facts, card_state, plan_message
from handlers.blocks.run import LiveState, live_message, notice_failure, notice_success
from handlers.front.common import FrontKit
from handlers.live import LiveRun
from handlers.slack_writer import SlackMessage, SlackWriter
from slack_emulator.limits import block_kit_problems
from tests.fleet_stream import (
    ENV,
    NOW,
    REQUEST,
    UP,
    FleetStream,
    all_succeed,
    fleet_steps,
    second_host_fails,
    succeeded,
    untouched,
)
from tests.test_blocks import pending, text_of

HOSTS3 = ["web-1", "web-2", "web-3"]


def hosts(n: int, *, long: bool = False) -> list[str]:
    suffix = ".eu-west-1.compute.internal.azora-production.example" if long else ""
    return [f"web-{i}{suffix}" for i in range(1, n + 1)]


async def watched(events: list[RunEvent], *, canary: int = 1) -> LiveRun:
    """The live message's observer fed the run's events (Slack is never called here)."""
    state = LiveState(run_id=12, environment="production", procedure=ProcedureName.SIMPLE,
                      from_version="(pre-flight)", to_version="v1.2.2", requested_by="U0ALICE",
                      confirmed_by=("U0ALICE",), reason="users see 500s", started_at=NOW,
                      board=HostBoard(canary=canary))
    writer = SlackWriter(AsyncWebClient(token="xoxb-never-called"))  # never started: no I/O
    live = LiveRun(writer=writer, message=SlackMessage("C0INCIDENTS", ts="1795776389.000100"),
                   state=state, now=lambda: NOW + timedelta(seconds=20))
    for event in events:
        await live(event)
    live.close()
    return live


def within_limits(blocks: Blocks) -> None:
    assert block_kit_problems(blocks) == []
    assert len(blocks) <= 50
    assert all(len(b["text"]["text"]) <= 3000 for b in blocks if "text" in b)


def message(live: LiveRun, seconds: float = 30) -> Blocks:
    blocks = live_message(live.state, now=NOW + timedelta(seconds=seconds))
    within_limits(blocks)
    return blocks


def buttons(blocks: Blocks) -> list[str]:
    return [e["text"]["text"] for b in blocks if b["type"] == "actions" for e in b["elements"]]


async def test_a_three_host_rollout_shows_each_host_on_its_line_as_it_goes() -> None:
    stream = FleetStream(HOSTS3)
    stream.host_ok("web-1")
    stream.start("web-2", 1)
    stream.finish("web-2", 1)
    stream.start("web-2", 2)
    live = await watched(stream.events)
    text = text_of(message(live))
    assert "*Hosts* (rollout order)" in text
    assert f"✅ *web-1* _(canary)_ · {UP} (14 s)" in text
    assert "⏳ *web-2* · step 2/7 Stop services (10 s…)" in text
    assert "⬜ *web-3* · waiting" in text
    assert "Check current version" not in text  # 21 step lines would drown the hosts
    assert buttons(message(live)) == ["Cancel run"]
    # Hosts appear in rollout order: the canary first.
    assert text.index("web-1") < text.index("web-2") < text.index("web-3")


async def test_hosts_wait_for_the_canary_until_it_is_done() -> None:
    stream = FleetStream(HOSTS3)
    stream.start("web-1", 4)
    text = text_of(message(await watched(stream.events)))
    assert "⏳ *web-1* _(canary)_ · step 4/7 Start services" in text
    assert "⬜ *web-2* · waiting for the canary" in text


async def test_a_finished_fleet_names_which_hosts_run_which_version() -> None:
    live = await watched(all_succeed(HOSTS3).events)
    blocks = message(live)
    text = text_of(blocks)
    assert blocks[0]["text"]["text"] == "✅ Rolled back production to v1.2.2 on all 3 hosts"
    assert "*Who runs what:* v1.2.2: web-1, web-2, web-3" in text
    assert buttons(blocks) == []


async def test_a_failed_host_says_where_it_failed_why_and_what_is_left() -> None:
    hosts5 = hosts(5)
    live = await watched(second_host_fails(hosts5).events)
    blocks = message(live)
    text = text_of(blocks)
    assert blocks[0]["text"]["text"].startswith("❌ Rollback failed: production")
    assert ("❌ *web-2* · FAILED at step 5/7 'Wait for health': health answered 503 for 60 s. "
            "· left: services UP but unhealthy; compose file names v1.2.2") in text
    assert "➖ *web-3* · untouched: still runs v1.2.3" in text
    assert f"✅ *web-1* _(canary)_ · {UP}" in text
    # The failed step's detail stays readable: its error, the state and its output tail.
    assert "*What failed on web-2:* step 5/7 'Wait for health'" in text
    assert "web-2: curl said 503" in text
    assert ("*Who runs what:* v1.2.2: web-1, web-2 (FAILED) · v1.2.3: web-3 (untouched), "
            "web-4 (untouched), web-5 (untouched)") in text


async def test_a_stopped_rollout_marks_the_hosts_it_stopped_midway() -> None:
    stream = FleetStream(["web-1", "web-2", "web-3", "web-4"], run_id=12)
    stream.host_ok("web-1")
    stream.host_fails("web-2", 4, error="the SSH connection to web-2 dropped.",
                      state="uncertain: 'Start services' failed part-way")
    for n in (1, 2):  # web-3 ran alongside web-2 and finished its current step
        stream.start("web-3", n)
        stream.finish("web-3", n, state="services STOPPED; compose file names v1.2.3")
    stream.end(RunStatus.FAILED, [
        succeeded("web-1"),
        HostOutcome("web-2", RunStatus.FAILED, "uncertain: 'Start services' failed part-way",
                    None),
        HostOutcome("web-3", RunStatus.CANCELLED, "services STOPPED; compose file names "
                    "v1.2.3", "v1.2.3"),
        untouched("web-4")], "web-2 failed; the rollout stopped.")
    text = text_of(message(await watched(stream.events)))
    assert ("🛑 *web-3* · stopped by the rollout after step 2/7 Stop services · left: services "
            "STOPPED; compose file names v1.2.3") in text
    assert "❌ *web-2* · FAILED at step 4/7 'Start services'" in text
    assert "➖ *web-4* · untouched: still runs v1.2.3" in text
    assert "version unknown: web-2 (FAILED)" in text and "v1.2.3: web-3 (stopped)" in text


@pytest.mark.parametrize("long_names", [False, True])
async def test_a_fifty_host_fleet_fits_in_one_message_at_every_moment(long_names: bool) -> None:
    fifty = hosts(50, long=long_names)
    stream = FleetStream(fifty)
    stream.host_ok(fifty[0])
    for h in fifty[1:]:  # one batch of 49 in parallel, all mid-step
        stream.start(h, 3)
    live = await watched(stream.events)
    running = text_of(message(live))
    stream.events.clear()
    for i, h in enumerate(fifty[1:], 1):
        if i % 7 == 0:
            stream.host_fails(h, 5, error="health answered 503 " + "x" * 300,
                              state="services UP but unhealthy " + "y" * 300)
        else:
            stream.host_ok(h)
    stream.end(RunStatus.FAILED, [succeeded(h) for h in fifty], "7 hosts failed.")
    for event in stream.events:
        await live(event)
    ended = message(live)
    assert fifty[0] in running and "⏳" in running
    text = text_of(ended)
    assert "7 hosts failed" in text or "4 more host(s) failed" in text
    assert "*What failed on web-8" in text  # the first failures keep their detail


async def test_a_huge_fleet_is_summarised_and_still_names_the_failed_hosts() -> None:
    many = hosts(400, long=True)
    stream = FleetStream(many)
    stream.host_ok(many[0])
    stream.host_fails(many[1], 5, error="health answered 503.", state="unhealthy")
    for h in many[2:200]:
        stream.host_ok(h)
    for h in many[200:]:
        stream.start(h, 2)
    text = text_of(message(await watched(stream.events)))
    assert f"❌ *{many[1]}* · FAILED at step 5/7" in text
    assert "succeeded (198):" in text and "and 186 more" in text
    assert "running (200):" in text


async def test_the_terminal_prints_a_host_line_whenever_its_state_changes_then_a_table() -> None:
    console = Console(record=True, width=200, color_system=None)
    progress = TerminalProgress(console, show_output=False, canary=1)
    events = second_host_fails(HOSTS3).events
    first = events[0]
    assert isinstance(first, RunStarted)
    events[0] = replace(first, checks=host_checks(first.hosts))
    for event in events:
        await progress(event)
    out = console.export_text()
    assert "  web-2\n    ✓ Host reachable: SSH to web-2 connected\n    ✓ Target image" in out
    web1 = [ln for ln in out.splitlines() if ln.strip().startswith(("▶ web-1", "✓ web-1"))]
    assert web1[0].strip() == "▶ web-1 (canary)  step 1/7 Check current version"
    assert web1[-1].strip() == f"✓ web-1 (canary)  {UP} (14 s)"
    assert len(web1) == 8  # each of its 7 steps, then done: printed only when it changed
    assert "✗ web-2  FAILED at step 5/7 'Wait for health'" in out
    assert "· web-3  waiting" in out
    assert "– web-3  untouched: still runs v1.2.3" in out
    table = out[out.index("host "):]
    assert "web-2" in table and "failed" in table and "untouched" in table
    assert "Who runs what: v1.2.2: web-1, web-2 (FAILED) · v1.2.3: web-3 (untouched)" in out
    assert "FAILED in" in out


# --- the card, the plan, and the notices ------------------------------------------------------

def fleet_env(**fleet: Any) -> Any:
    return ENV.model_validate({
        **ENV.model_dump(exclude={"host_envs"}),
        "hosts": [{"name": f"web-{i}"} for i in range(1, 9)],
        "fleet": {"canary": 1, "batch_size": 5, "max_failed_hosts": 0, **fleet}})


def fleet_plan(checks: tuple[Check, ...], shape: FleetShape) -> Plan:
    return Plan(request=REQUEST, preflight=Preflight(checks=checks, current="v1.2.3",
                                                     target="v1.2.2", backup=None),
                title="Procedure 1: Simple Rollback", steps=fleet_steps(list(shape.hosts)))


def host_checks(names: tuple[str, ...], *, missing_on: str = "") -> tuple[Check, ...]:
    checks = [Check("Lock", True, "free")]
    for h in names:
        checks.append(Check(f"{h}: Host reachable", True, f"SSH to {h} connected"))
        checks.append(Check(f"{h}: Target image", h != missing_on,
                            f"azora-api:v1.2.2 is {'not ' if h == missing_on else ''}on {h}"))
    return tuple(checks)


def test_the_rollout_order_is_one_sentence() -> None:
    shape = fleet_shape(fleet_env(), ProcedureName.SIMPLE)
    assert shape is not None and shape.canary == 1
    assert shape.rollout == (
        "Rollout over 8 hosts: web-1 first (canary: alone, and verified before any other host "
        "is touched), then the other 7 in 2 batches of up to 5 (the hosts of a batch in "
        "parallel): web-2, web-3, web-4, web-5, web-6, web-7, web-8. A failed canary or the "
        "first failed host stops the rollout; hosts not started by then stay untouched.")
    one_batch = fleet_shape(fleet_env(batch_size=None, max_failed_hosts=2),
                            ProcedureName.RESTORE)
    assert one_batch is not None
    assert one_batch.rollout.startswith(
        "Rollout over 8 hosts: every host is stopped first, then the database work runs once "
        "on web-1; then the hosts start: web-1 first")
    assert "then the other 7 at once" in one_batch.rollout
    assert "more than 2 failed hosts stop the rollout" in one_batch.rollout
    assert fleet_shape(ENV, ProcedureName.SIMPLE) is None  # one host: the card as always


def test_the_card_groups_checks_per_host_and_states_the_rollout() -> None:
    shape = fleet_shape(fleet_env(), ProcedureName.SIMPLE)
    assert shape is not None
    p = fleet_plan(host_checks(shape.hosts), shape)
    blocks = [*card_body(p, shape), *card_state(card_facts(p), pending(p), now=NOW)]
    within_limits(blocks)
    text = text_of(blocks)
    assert "*Hosts:* 8 (web-1, web-2" in text
    assert "*web-1* _(canary)_\n    ✅ Host reachable: SSH to web-1 connected" in text
    assert "*web-2*\n    ✅ Host reachable" in text
    assert "*Steps on each host* (56 in all over 8 hosts; web-1 shown)" in text
    assert "*Rollout:* Rollout over 8 hosts: web-1 first (canary" in text
    assert "Roll back to v1.2.2" in buttons(blocks)


def test_a_refusal_on_the_card_names_the_host() -> None:
    shape = fleet_shape(fleet_env(), ProcedureName.SIMPLE)
    assert shape is not None
    p = fleet_plan(host_checks(shape.hosts, missing_on="web-6"), shape)
    blocks = [*card_body(p, shape), *card_state(card_facts(p), pending(p), now=NOW)]
    within_limits(blocks)
    text = text_of(blocks)
    assert ("🚫 *Cannot roll back:* web-6: Target image: azora-api:v1.2.2 is not on web-6"
            in text)
    assert "    ❌ Target image: azora-api:v1.2.2 is not on web-6" in text
    assert "Roll back to v1.2.2" not in buttons(blocks)


def test_fifty_hosts_of_checks_fit_on_the_card_and_the_plan() -> None:
    names = tuple(hosts(50, long=True))
    shape = FleetShape(hosts=names, canary=1, rollout="Rollout over 50 hosts: …")
    p = fleet_plan(host_checks(names, missing_on=names[30]), shape)
    for blocks in ([*card_body(p, shape), *card_state(card_facts(p), pending(p), now=NOW)],
                   plan_message(replace(p, preflight=replace(p.preflight, checks=host_checks(
                       names))), shape)):
        within_limits(blocks)
    text = text_of(card_body(p, shape))
    assert "✅ every check passed on 49 hosts" in text
    assert f"❌ *{names[30]}*: Target image: azora-api:v1.2.2 is not on {names[30]}" in text


def test_the_plan_shows_one_hosts_commands_and_the_terminal_plan_every_host() -> None:
    shape = fleet_shape(fleet_env(), ProcedureName.SIMPLE)
    assert shape is not None
    p = fleet_plan(host_checks(shape.hosts), shape)
    text = text_of(plan_message(p, shape))
    assert "The commands of web-1 are shown; every host runs the same steps" in text
    assert text.count("Stop services") == 1
    console = Console(record=True, width=200, color_system=None)
    render_plan(console, p, shape)
    out = console.export_text()
    assert "  web-1 (canary)\n    ✓ Host reachable: SSH to web-1 connected" in out
    assert out.count("Stop services") == 8
    assert "Rollout Rollout over 8 hosts" in out


def test_notices_name_the_hosts_and_their_versions() -> None:
    ok = notice_success(version="v1.2.2", eta="TBD", run_id=12, hosts=tuple(HOSTS3))
    within_limits(ok)
    assert "Rollback completed. Service restored to v1.2.2." in text_of(ok)
    assert "All 3 hosts run v1.2.2: web-1, web-2, web-3" in text_of(ok)
    last = second_host_fails(hosts(50)).events[-1]
    assert isinstance(last, RunFinished)
    outcome = last.outcome
    failed = notice_failure(outcome, environment="production")
    within_limits(failed)
    assert ("*Who runs what:* v1.2.2: web-1, web-2 (FAILED) · v1.2.3: web-3 (untouched), "
            "web-4 (untouched)") in text_of(failed)
    assert "and 36 more" in text_of(failed)


def test_who_runs_what_groups_by_version() -> None:
    assert who_runs_what([succeeded("a"), untouched("b"),
                          HostOutcome("c", RunStatus.FAILED, "?", None)]) == (
        "v1.2.2: a · v1.2.3: b (untouched) · version unknown: c (FAILED)")


def test_a_one_host_run_has_no_board() -> None:
    board = HostBoard(canary=1)
    stream = FleetStream(["web-1"])
    first = stream.events[0]
    assert isinstance(first, RunStarted)
    assert board.apply(replace(first, hosts=()), now=NOW) == () and not board.is_fleet
    assert HostPhase.WAITING.value == "waiting"


async def test_hosts_waiting_on_the_database_work_say_so_in_slack_and_the_terminal() -> None:
    stream = FleetStream(HOSTS3)
    database = StepInfo(index=99, key="migrate_down", title="Roll back migration",
                        destructive=True, shows=())
    started = stream.events[0]
    assert isinstance(started, RunStarted)
    stream.events[0] = replace(started, steps=(*started.steps, database))
    for h in HOSTS3:  # every host stops first
        for n in (1, 2):
            stream.start(h, n)
            stream.finish(h, n, state="services STOPPED; compose file names v1.2.3")
    stream.events.append(StepStarted(12, database))
    text = text_of(message(await watched(stream.events)))
    assert ("⏸️ *web-3* · waiting after step 2/7 Stop services · services STOPPED; compose "
            "file names v1.2.3") in text
    assert "*Environment steps*\n⏳ Roll back migration" in text
    console = Console(record=True, width=200, color_system=None)
    progress = TerminalProgress(console, show_output=False, canary=1)
    for event in stream.events:
        await progress(event)
    out = console.export_text()
    assert "‖ web-3  waiting after step 2/7 Stop services · services STOPPED" in out
    assert "▶ Roll back migration (the environment)" in out
    assert "‖ web-1 (canary)  waiting after step 1/7" not in out  # its next step came at once


async def test_a_cancel_mid_rollout_names_the_hosts_it_stopped_and_those_never_touched() -> None:
    stream = FleetStream(HOSTS3)
    stream.host_ok("web-1")
    for n in (1, 2):
        stream.start("web-2", n)
        stream.finish("web-2", n, state="services STOPPED; compose file names v1.2.3")
    stream.end(RunStatus.CANCELLED, [
        succeeded("web-1"),
        HostOutcome("web-2", RunStatus.CANCELLED, "services STOPPED; compose file names v1.2.3",
                    "v1.2.3"),
        untouched("web-3")], "Cancelled by U0BOB before 'Switch compose file'.")
    text = text_of(message(await watched(stream.events)))
    assert ("🛑 *web-2* · stopped by the cancel after step 2/7 Stop services · left: services "
            "STOPPED; compose file names v1.2.3") in text
    assert "➖ *web-3* · untouched: still runs v1.2.3" in text
    assert "v1.2.3: web-2 (stopped), web-3 (untouched)" in text


async def test_a_host_the_outcome_calls_unhealthy_without_a_failed_step_is_not_a_success() -> None:
    stream = FleetStream(["web-1", "web-2"])
    stream.host_ok("web-1")
    stream.host_ok("web-2")
    stream.end(RunStatus.RESTORE_RECOMMENDED, [
        succeeded("web-1"),
        HostOutcome("web-2", RunStatus.RESTORE_RECOMMENDED, "runs v1.2.2 but answers 503",
                    "v1.2.2")], "web-2 is still unhealthy: restore recommended.")
    text = text_of(message(await watched(stream.events)))
    assert "❌ *web-2* · RESTORE RECOMMENDED: runs v1.2.2 but answers 503" in text


def test_the_slack_front_reads_the_fleet_from_the_runbook() -> None:
    runbook = SimpleNamespace(environments={"production": fleet_env(), "staging": ENV})
    kit = FrontKit(rollbot=SimpleNamespace(runbook=runbook),  # type: ignore[arg-type]
                   client=AsyncWebClient(token="xoxb-never-called"),
                   config=None, access=None)  # type: ignore[arg-type]
    shape = kit.fleet("production", ProcedureName.SIMPLE)
    assert shape is not None and shape.hosts[0] == "web-1" and shape.canary == 1
    assert kit.fleet("staging", ProcedureName.SIMPLE) is None
    # Every live message (a person's run, a resumed one, an automatic one) marks the canaries.
    assert kit.board("production").canary == 1
    assert kit.board("staging").canary == 0 and kit.board("nowhere").canary == 0
