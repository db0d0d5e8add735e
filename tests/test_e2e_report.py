"""On-call finishes the rollback report in Slack; rollbot writes it once per change.

The report is written when the run ends, after each check, after each Healthy/Regressed answer
and after each edit of Impact and Root Cause, once each, and each write is uploaded into the
run's thread.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.post_rollback.report import Reporter
from bot.store.runs import Store
from handlers.ids import Action, Block, Field
from slack_emulator.state import UploadedFile
from tests.sandbox import Sandbox
from tests.slack_world import (
    ALICE,
    BOB,
    MALLORY,
    SlackWorld,
    button_labels,
    message_text,
    slack_world,
)
from tests.test_e2e_slack import _verify_quickly, roll_back_by_slack, wait_final

pytestmark = pytest.mark.e2e

IMPACT = "about 1,200 users saw failed checkouts for 25 minutes"
ROOT_CAUSE = "v1.2.3 changed the cache key of carts without a migration"


def reports(world: SlackWorld) -> list[UploadedFile]:
    """The reports rollbot uploaded, oldest first."""
    return [f for f in world.emu.files() if f.completed and f.name.startswith("rollback-")]


async def uploads(world: SlackWorld, n: int) -> list[UploadedFile]:
    return await world.emu.wait_for(lambda: reports(world) if len(reports(world)) >= n
                                    else None, timeout=60)


async def test_people_finish_the_report_and_each_change_is_written_and_uploaded_once(
    production: Sandbox, store: Store, tmp_path: Path
) -> None:
    async with slack_world(production, store.dsn, tmp_path,
                           runbook_text=_verify_quickly("[0.02]")) as world:
        reporter = Reporter(store=store, directory=tmp_path / "incident-logs")
        channel, ts = await roll_back_by_slack(world)
        await wait_final(world, ts)
        status = await world.wait_message(
            lambda m: m.text.startswith("✅ Immediate verification of rollback #"), timeout=60)
        run_id = (await store.history())[0].id

        # Two changes so far (the run, its Immediate check): two writes, two uploads.
        first, second = await uploads(world, 2)
        checklist = await world.wait_message(
            lambda m: m.text.startswith("Rollback checklist, run #") and "Document incident"
            in message_text(m) and "Edit report (Impact, Root Cause)" in button_labels(m))
        saved = await reporter.saved(run_id)
        assert saved is not None and saved.revision == 2
        assert (first.thread_ts, second.thread_ts) == (ts, ts)
        # (the check may be announced before the run's own upload: the order is not the point)
        assert sorted(str(f.initial_comment) for f in (first, second)) == [
            "📝 Rollback report", "📝 Rollback report (updated)"]
        assert any("✅ Immediate check" in f.content.decode() for f in (first, second))

        # Someone who is not on the list cannot open the form; it is refused and audited.
        await world.click(MALLORY, checklist, Action.EDIT_REPORT)
        await world.emu.wait_for(lambda: any(
            "you cannot edit a rollback report" in message_text(m)
            for m in world.emu.ephemerals(channel, MALLORY)))
        assert world.emu.views(MALLORY) == []
        assert any(a.kind == "refusal" and a.actor == MALLORY
                   and "edit a rollback report" in a.detail for a in await store.audit_entries())

        # Bob writes Impact and Root Cause in the modal.
        await world.click(BOB, checklist, Action.EDIT_REPORT)
        view = await world.emu.wait_for(lambda: next(iter(world.emu.views(BOB, open_only=True)),
                                                     None))
        too_long = await world.sender.view_submission(BOB, view.id, {
            Block.REPORT_IMPACT.value: {Field.IMPACT.value: "x" * 501},
            Block.REPORT_ROOT_CAUSE.value: {Field.ROOT_CAUSE.value: ROOT_CAUSE}})
        assert too_long.json["response_action"] == "errors"
        assert "keep it under 500" in too_long.json["errors"][Block.REPORT_IMPACT.value]
        assert (await reporter.saved(run_id)) == saved  # nothing changed
        done = await world.sender.view_submission(BOB, view.id, {
            Block.REPORT_IMPACT.value: {Field.IMPACT.value: IMPACT},
            Block.REPORT_ROOT_CAUSE.value: {Field.ROOT_CAUSE.value: ROOT_CAUSE}})
        assert done.status == 200 and not done.json, done.json
        third = (await uploads(world, 3))[2]
        body = third.content.decode()
        assert third.thread_ts == ts
        assert third.initial_comment == (f"📝 Rollback report (updated: Impact and Root Cause by "
                                         f"<@{BOB}>)")
        assert f"- Impact: {IMPACT}" in body
        assert f"## Root Cause\n{ROOT_CAUSE}\n" in body
        assert f"(last edited by {BOB} at " in body

        # Alice answers Healthy from the dashboards: it goes in the report with who and when.
        await world.click(ALICE, status, Action.VERDICT_HEALTHY)
        fourth = (await uploads(world, 4))[3]
        body = fourth.content.decode()
        assert f"  - 👍 Dashboards: Healthy, said {ALICE} at 20" in body
        assert f"- Impact: {IMPACT}" in body  # what Bob wrote stays

        # Opening the form again shows what the report says now.
        await world.click(BOB, checklist, Action.EDIT_REPORT)
        again = await world.emu.wait_for(lambda: next(
            (v for v in world.emu.views(BOB, open_only=True) if v.id != view.id), None))
        fields = {b["block_id"]: b["element"].get("initial_value")
                  for b in again.payload["blocks"] if b["type"] == "input"}
        assert fields == {Block.REPORT_IMPACT.value: IMPACT,
                          Block.REPORT_ROOT_CAUSE.value: ROOT_CAUSE}

        # Four changes, four writes, four uploads; disk, database and Slack agree.
        saved = await reporter.saved(run_id)
        assert saved is not None and saved.revision == 4 == len(reports(world))
        assert saved.path.read_text() == saved.markdown == body
        assert await store.report(run_id) == body
        assert world.problems() == []
