"""Bad input and broken edges: refused before anything runs, or failed with an honest state."""

from __future__ import annotations

import asyncio
import logging
import re

import pytest

from bot.config import Runbook
from bot.errors import RunLocked
from bot.events import RunEvent, StepStarted
from bot.model import ProcedureName, RunStatus
from bot.procedures.compose_file import find_image_line
from bot.service import Rollbot
from bot.store.runs import Store
from tests.sandbox import CORRUPT_BACKUP, CURRENT_COUNTS, EXPIRED_BACKUP, Sandbox
from tests.test_e2e_procedures import request

pytestmark = pytest.mark.e2e


async def test_corrupt_backup_is_refused_and_nothing_is_dropped(
    production: Sandbox, rollbot: Rollbot, store: Store
) -> None:
    outcome = await rollbot.rollback(request(ProcedureName.RESTORE, backup=CORRUPT_BACKUP))
    assert outcome.status is RunStatus.REFUSED
    assert "Backup integrity" in outcome.message and "corrupt" in outcome.message
    assert "nothing was changed" in outcome.message
    assert outcome.steps == ()
    audit = await store.audit_entries(run_id=outcome.run_id)
    assert not [a for a in audit if "DROP" in a.command or " down" in a.command]
    assert any(a.kind == "refusal" for a in audit)
    assert production.row_counts() == CURRENT_COUNTS
    assert production.running_image() == "azora-api:v1.2.3"


async def test_backup_beyond_retention_is_refused(production: Sandbox, rollbot: Rollbot) -> None:
    outcome = await rollbot.rollback(request(ProcedureName.RESTORE, backup=EXPIRED_BACKUP))
    assert outcome.status is RunStatus.REFUSED
    assert "older than the 30-day retention" in outcome.message


async def test_unknown_version_is_refused_with_what_is_there(production: Sandbox,
                                                             rollbot: Rollbot) -> None:
    outcome = await rollbot.rollback(request(ProcedureName.SIMPLE, target="v9.9.9"))
    assert outcome.status is RunStatus.REFUSED
    assert "azora-api:v9.9.9 is not on the host" in outcome.message
    assert "v1.2.2" in outcome.message  # what is there instead


async def test_rolling_back_to_what_already_runs_is_refused(production: Sandbox,
                                                           rollbot: Rollbot) -> None:
    outcome = await rollbot.rollback(request(ProcedureName.SIMPLE, target="v1.2.3"))
    assert outcome.status is RunStatus.REFUSED
    assert "already runs v1.2.3" in outcome.message


async def test_unknown_host_key_is_refused_before_any_command(
    production: Sandbox, runbook: Runbook, store: Store
) -> None:
    env = runbook.environments["production"]
    other = env.model_copy(update={"ssh": env.ssh.model_copy(
        update={"known_hosts": production.state / "client" / "known_hosts.other"})})
    forged = runbook.model_copy(update={"environments": {"production": other}})
    import httpx

    from bot.edges.http import HttpxProbe
    async with httpx.AsyncClient() as client:
        bot = Rollbot(runbook=forged, store=store, probe=HttpxProbe(client))
        outcome = await bot.rollback(request(ProcedureName.SIMPLE))
    assert outcome.status is RunStatus.REFUSED
    assert "host key" in outcome.message and "Nothing was sent" in outcome.message
    audit = await store.audit_entries(run_id=outcome.run_id)
    assert [a.kind for a in audit if a.kind in ("command", "file")] == []
    assert any(a.kind == "refusal" and "host key" in a.detail for a in audit)
    assert production.running_image() == "azora-api:v1.2.3"


async def test_ssh_dropped_mid_step_fails_clearly_and_the_compose_file_is_whole(
    production: Sandbox, rollbot: Rollbot, store: Store
) -> None:
    killed = asyncio.Event()

    async def kill_sshd_during_stop(event: RunEvent) -> None:
        if isinstance(event, StepStarted) and event.step.key == "stop_services":
            await asyncio.to_thread(production.kill_ssh)
            killed.set()

    try:
        outcome = await rollbot.rollback(request(ProcedureName.SIMPLE),
                                         observers=[kill_sshd_during_stop])
        assert killed.is_set()
        assert outcome.status is RunStatus.FAILED
        assert re.search(r"connection to prod-user@127\.0\.0\.1:\d+ dropped|ended without an "
                         r"exit status|lost the SSH connection", outcome.message), outcome.message
        assert "The host is left:" in outcome.message
        text = production.compose_file.read_text()
        tag = find_image_line(text, service="api", image="azora-api").tag
        assert tag in ("v1.2.3", "v1.2.2")
        record = await store.get_run(outcome.run_id)
        assert record is not None and record.status is RunStatus.FAILED
    finally:
        production.reset()  # brings sshd back for the next test


async def test_a_second_rollback_is_refused_naming_the_first(
    production: Sandbox, rollbot: Rollbot, store: Store
) -> None:
    started = asyncio.Event()

    async def note_start(event: RunEvent) -> None:
        if isinstance(event, StepStarted):
            started.set()

    first = asyncio.create_task(rollbot.rollback(request(ProcedureName.SIMPLE),
                                                 observers=[note_start]))
    await asyncio.wait_for(started.wait(), timeout=60)
    second = request(ProcedureName.EMERGENCY)
    second = type(second)(**{**second.__dict__, "requested_by": "bob"})
    with pytest.raises(RunLocked) as locked:
        await rollbot.rollback(second)
    assert "started by alice" in str(locked.value)
    assert (await first).status is RunStatus.SUCCEEDED
    refusals = [a for a in await store.audit_entries() if a.kind == "refusal"]
    assert refusals and refusals[-1].actor == "bob"


async def test_hardened_host_falls_back_to_the_docker_cli(
    production: Sandbox, rollbot: Rollbot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.edges.docker")
    versions = await rollbot.versions("hardened", actor="alice")
    assert versions.running == "v1.2.3"
    assert {"v1.2.1", "v1.2.2", "v1.2.3"} <= {t.tag for t in versions.tags}
    assert "using the docker CLI over SSH" in caplog.text
    outcome = await rollbot.rollback(request(ProcedureName.SIMPLE).__class__(
        **{**request(ProcedureName.SIMPLE).__dict__, "environment": "hardened"}))
    assert outcome.status is RunStatus.SUCCEEDED, outcome.message
    assert production.running_image() == "azora-api:v1.2.2"
