"""A runbook with database passwords in its commands: the password never leaves rollbot.

The sandbox's PostgreSQL trusts loopback, so the password in ``env PGPASSWORD=…`` and in the
``postgresql://…`` URLs is ignored by the host but present in every command rollbot sends. The
team plans, rolls back with Procedure 2 and hits a failing migration tool, from the terminal and
from Slack; afterwards the password is in no output, audit row, Slack message, report or log.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.store.runs import Store
from handlers.ids import Action
from tests.sandbox import Sandbox
from tests.slack_world import (
    ALICE,
    BOB,
    INCIDENTS,
    SlackWorld,
    header,
    message_text,
    slack_world,
)

pytestmark = pytest.mark.e2e

PASSWORD = f"pw-{secrets.token_hex(8)}"


def with_passwords(runbook: str, *, pg_port: int) -> str:
    """production: passwords everywhere; hardened: the same, and a migrate tool that fails."""
    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{pg_port}/azora_prod"
    production, sep, hardened = runbook.partition("[environments.hardened]")
    assert sep and 'psql = "psql ' in production and 'migrate_down = "sh ' in production

    def secret(section: str) -> str:
        return (section
                .replace('psql = "psql ', f'psql = "env PGPASSWORD={PASSWORD} psql ')
                .replace('pg_dump = "pg_dump ', f'pg_dump = "env PGPASSWORD={PASSWORD} pg_dump ')
                .replace('migrate_down = "sh ', f'migrate_down = "env DATABASE_URL={url} sh ')
                .replace('migrate_status = "sh ', f'migrate_status = "env DATABASE_URL={url} sh '))

    # A migration tool that cannot connect and, like many, prints the URL it tried.
    broken_url = url.replace(f":{pg_port}/", ":1/")
    failing = (f"migrate_down = '''env DATABASE_URL={broken_url} sh -c 'echo \"migrate: cannot "
               f"connect to $DATABASE_URL\" >&2; exit 1' down'''\n")
    hardened = "\n".join(failing.rstrip() if line.startswith("migrate_down = ") else line
                         for line in secret(hardened).splitlines()) + "\n"
    return secret(production) + sep + hardened


def rollbot_cli(runbook: Path, dsn: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # INFO: asyncssh then logs every command it sends, which is what must come out redacted.
    env = {**os.environ, "ROLLBOT_CONFIG": str(runbook), "DATABASE_URL": dsn,
           "ROLLBOT_LOG_LEVEL": "INFO", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "bot", *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=cwd)


@pytest.fixture
async def world(production: Sandbox, store: Store, tmp_path: Path
                ) -> AsyncIterator[SlackWorld]:
    async with slack_world(production, store.dsn, tmp_path, runbook_text=lambda t: with_passwords(
            t, pg_port=production.pg_port)) as w:
        yield w
        assert w.problems() == [], w.problems()


async def everything_rollbot_stored(store: Store) -> str:
    """Every row of every table of rollbot's database, as text."""
    tables = await store.pool.fetch(
        "SELECT quote_ident(table_name) AS t FROM information_schema.tables"
        " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'")
    rows = []
    for t in tables:
        rows += [r[0] for r in await store.pool.fetch(f"SELECT x::text FROM {t['t']} x")]
    return "\n".join(rows)


async def run_from_slack(world: SlackWorld, text: str, card_title: str, final: str) -> str:
    await world.command(ALICE, text)
    card = await world.wait_card(card_title)
    await world.click(ALICE, card, Action.CONFIRM)
    # a migration rollback is a data change: a second person approves it
    waiting = await world.wait_message(
        lambda m: m.ts == card.ts and "Waiting for a second approver" in message_text(m))
    await world.click(BOB, waiting, Action.APPROVE_RESTORE)
    await world.wait_message(lambda m: m.ts == card.ts and header(m).startswith(final),
                             timeout=180)
    # the report is uploaded into the run's thread once the run is over
    await world.emu.wait_for(lambda: any(f.thread_ts == card.ts for f in world.emu.files()),
                             timeout=60)
    return card.ts


async def test_passwords_in_the_runbook_appear_nowhere(
    world: SlackWorld, production: Sandbox, store: Store, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)  # asyncssh logs each command it sends at INFO
    runbook = tmp_path / "rollbot.toml"  # the Slack world's runbook, with the passwords
    assert PASSWORD in runbook.read_text()
    migrations_before = production.psql("SELECT name FROM migrations ORDER BY executed_at DESC")

    # On the terminal: the plan shows the commands, the password masked.
    plan = rollbot_cli(runbook, store.dsn, "plan", "v1.2.2", "--procedure", "restore", cwd=tmp_path)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "env PGPASSWORD=*** psql" in plan.stdout and "env PGPASSWORD=*** pg_dump" in plan.stdout
    # A migrations rollback on the terminal that fails at the migration tool.
    failed = rollbot_cli(runbook, store.dsn, "rollback", "v1.2.2", "--procedure", "migrations",
                         "--env", "hardened", "--yes", "--as", "alice", cwd=tmp_path)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "Roll back the newest migration" in failed.stdout and "FAILED" in failed.stdout
    assert "postgresql://postgres:***@127.0.0.1:1/azora_prod" in failed.stdout
    assert "Command:" in failed.stderr and "PGPASSWORD=***" in failed.stderr  # asyncssh's log
    for out in (plan, failed):
        assert PASSWORD not in out.stdout + out.stderr

    # In Slack: the plan, the same failure, then the migrations rollback that works.
    await world.command(ALICE, "plan v1.2.2 --migrations")
    shown = await world.emu.wait_for(lambda: next(
        (m for m in world.emu.ephemerals(INCIDENTS, ALICE) if "Plan:" in message_text(m)), None))
    assert "env PGPASSWORD=*** psql" in message_text(shown)
    assert "DATABASE_URL=postgresql://postgres:***@127.0.0.1" in message_text(shown)
    failed_ts = await run_from_slack(world, "v1.2.2 --migrations --env hardened",
                                     "Rollback hardened: v1.2.3 → v1.2.2", "❌ Rollback failed")
    thread = "\n".join(m.text for m in world.emu.thread(INCIDENTS, failed_ts))
    assert "migrate: cannot connect to postgresql://postgres:***@127.0.0.1:1/" in thread
    notice = await world.wait_message(lambda m: "did not complete" in m.text)
    assert "Roll back the newest migration" in message_text(notice)
    await run_from_slack(world, "v1.2.2 --migrations", "Rollback production: v1.2.3 → v1.2.2",
                         "✅ Rolled back")
    assert production.running_image() == "azora-api:v1.2.2"
    assert production.psql("SELECT name FROM migrations ORDER BY executed_at DESC") \
        != migrations_before

    # Nowhere: rollbot's database (audit rows, runs, steps, reports, cards), everything Slack
    # received (messages with their earlier versions, thread replies, ephemerals, uploads),
    # the report files and the logs.
    stored = await everything_rollbot_stored(store)
    audit = await store.audit_entries(limit=5000)
    assert any("PGPASSWORD=***" in a.command for a in audit)
    assert any("postgresql://postgres:***@" in a.command for a in audit)
    assert PASSWORD not in stored
    slack = json.dumps([c.to_json() for c in world.emu.calls], default=str)
    assert "chat.update" in slack and "files" in slack
    assert PASSWORD not in slack
    uploads = [f.content.decode() for f in world.emu.files() if f.content]
    assert len(uploads) >= 2 and all(u.startswith("# Rollback Report") for u in uploads)
    assert not any(PASSWORD in u for u in uploads)
    reports = list((tmp_path / "incident-logs").glob("rollback-*.md"))
    assert len(reports) >= 2
    assert not any(PASSWORD in r.read_text() for r in reports)
    assert "Command:" in caplog.text
    assert PASSWORD not in caplog.text
