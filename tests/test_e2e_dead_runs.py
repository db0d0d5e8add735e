"""rollbot itself dies mid-run (SIGKILL): the environment is free at once, and people are told.

The run's lock is its own database session, so the kill frees it: the on-call's rerun is accepted
within seconds, not refused with "wait for it to finish", and the dead run is marked interrupted
with the host state it last recorded. Behind a load balancer, the surviving replica finds the
dead run by itself and edits its live message in Slack to say so.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from bot.model import RunStatus
from bot.store.runs import Store
from handlers.ids import Action
from tests.replicas import two_replicas
from tests.sandbox import Sandbox
from tests.slack_world import ALICE, INCIDENTS, button_labels, header, message_text
from tests.test_e2e_slack import SLOW_COMPOSE

pytestmark = pytest.mark.e2e


def rollbot_cli(sb: Sandbox, dsn: str, *args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "ROLLBOT_CONFIG": str(sb.runbook), "DATABASE_URL": dsn,
           "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "bot", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd)


async def last_recorded_state(store: Store, run_id: int) -> str:
    return str(await store.pool.fetchval(
        "SELECT host_state FROM run_steps WHERE run_id = $1 AND finished_at IS NOT NULL"
        " ORDER BY finished_at DESC LIMIT 1", run_id))


async def test_a_rerun_after_the_cli_was_killed_is_accepted_at_once_and_converges(
    production: Sandbox, store: Store, tmp_path: Path
) -> None:
    first = rollbot_cli(production, store.dsn, "rollback", "v1.2.2", "--yes", "--as", "alice",
                        cwd=tmp_path)
    try:
        assert first.stdout is not None
        seen = []
        for line in first.stdout:
            seen.append(line)
            if "✓ [2/7] Stop services" in line:
                first.kill()  # SIGKILL: no finally, no finish_run, nothing written
                break
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=30)
    assert first.returncode == -9, "".join(seen)
    killed_at = await store.pool.fetchval("SELECT now()")
    [dead] = await store.history()
    assert dead.status is RunStatus.RUNNING  # nobody said it ended: it just stopped

    again = rollbot_cli(production, store.dsn, "rollback", "v1.2.2", "--yes", "--as", "bob",
                        cwd=tmp_path)
    try:
        out, _ = again.communicate(timeout=300)
    finally:
        if again.poll() is None:
            again.kill()
            again.wait(timeout=30)
    assert again.returncode == 0, out
    assert "Wait for it to finish" not in out
    assert "SUCCEEDED" in out
    assert production.running_image() == "azora-api:v1.2.2"  # converged, and healthy (step 5)

    rerun, interrupted = await store.history()
    assert rerun.status is RunStatus.SUCCEEDED and rerun.requested_by == "cli:bob"
    assert rerun.created_at - killed_at < timedelta(seconds=10), "the rerun waited for a lock"
    assert interrupted.id == dead.id and interrupted.status is RunStatus.INTERRUPTED
    assert "services STOPPED" in interrupted.host_state
    assert interrupted.host_state == await last_recorded_state(store, dead.id)
    assert "died" in interrupted.message and "may be mid-procedure" in interrupted.message


async def test_killing_the_replica_running_a_rollback_the_other_marks_it_and_says_so(
    production: Sandbox, store: Store, tmp_path: Path
) -> None:
    slow = lambda text: text.replace('command = "docker-compose"', SLOW_COMPOSE)  # noqa: E731
    async with two_replicas(production, store.dsn, tmp_path, runbook_text=slow) as world:
        await world.command(ALICE, "v1.2.2 v1.2.3 fails health", INCIDENTS)
        card = await world.wait_message(
            lambda m: header(m).startswith("Rollback production: v1.2.3 → v1.2.2")
            or header(m).startswith("🚨 Rollback production: v1.2.3 → v1.2.2"),
            channel=INCIDENTS)
        await world.click(ALICE, card, Action.CONFIRM)

        # "Stop services" has finished: production is down, and the runner dies
        async def stopped() -> int | None:
            return await store.pool.fetchval(
                "SELECT run_id FROM run_steps WHERE key = 'stop_services'"
                " AND state = 'succeeded'")
        deadline = time.monotonic() + 120
        while (run_id := await stopped()) is None:
            assert time.monotonic() < deadline, world.logs()
            await asyncio.sleep(0.1)
        owner = await store.pool.fetchval("SELECT owner FROM runs WHERE id = $1", run_id)
        runner = next(r for r in world.replicas if owner.endswith(f":{r.pid}"))
        runner.kill()
        survivor = world.other(runner)

        down = await world.wait_message(
            lambda m: m.ts == card.ts and header(m).startswith("🔴 Rollback interrupted"),
            channel=INCIDENTS, timeout=30)
        text = message_text(down)
        assert header(down) == "🔴 Rollback interrupted: production is DOWN"
        assert "The rollbot process running this rollback died" in text
        record = await store.get_run(run_id)
        assert record is not None and record.status is RunStatus.INTERRUPTED
        assert "services STOPPED" in record.host_state
        assert record.host_state == await last_recorded_state(store, run_id)
        assert f"Host state (last recorded):* {record.host_state}" in text
        assert "may be mid-procedure" in text
        assert button_labels(down) == ["Resume rollback", "Put back what ran before"]
        finder = await store.pool.fetchval(
            "SELECT found_by FROM run_interruptions WHERE run_id = $1", run_id)
        assert finder.endswith(f":{survivor.pid}")
        edits = [c for c in world.emu.calls_to("chat.update")
                 if "Rollback interrupted" in str(c.params.get("blocks"))]
        assert len(edits) == 1  # told once


async def test_without_slack_serve_marks_a_killed_cli_run_logs_it_and_resume_finishes_it(
    production: Sandbox, store: Store, tmp_path: Path
) -> None:
    async with two_replicas(production, store.dsn, tmp_path, slack=False, count=1) as world:
        first = rollbot_cli(production, store.dsn, "rollback", "v1.2.2", "--yes", "--as",
                            "alice", cwd=tmp_path)
        try:
            assert first.stdout is not None
            for line in first.stdout:
                if "✓ [2/7] Stop services" in line:
                    first.kill()
                    break
            first.wait(timeout=30)
        finally:
            if first.poll() is None:
                first.kill()
                first.wait(timeout=30)
        [dead] = await store.history()

        # nobody reran it: `rollbot serve` finds the dead run by itself and says so in its log
        log = await world.wait_log(world["r0"], f"run #{dead.id} in production (", timeout=30)
        said = next(line for line in log.splitlines()
                    if "bot.recovery.interrupted" in line and f"run #{dead.id}" in line)
        assert "WARNING" in said and "died" in said
        assert f"`rollbot resume {dead.id}`" in said  # production was left down
        record = await store.get_run(dead.id)
        assert record is not None and record.status is RunStatus.INTERRUPTED
        assert production.running_image() == ""

        # the on-call takes the offer from the terminal: the rollback finishes where it stopped
        resume = rollbot_cli(production, store.dsn, "resume", str(dead.id), "--yes", "--as",
                             "bob", cwd=tmp_path)
        try:
            done, _ = resume.communicate(timeout=300)
        finally:
            if resume.poll() is None:
                resume.kill()
                resume.wait(timeout=30)
        assert resume.returncode == 0, done
        assert "Stop services" not in done  # done by the dead run, not repeated
        assert production.running_image() == "azora-api:v1.2.2"
        resumed = (await store.history())[0]
        assert resumed.status is RunStatus.SUCCEEDED
        assert f"after run #{dead.id} was interrupted (its rollbot died)" in resumed.reason
