"""Signed events out, end to end: real rollbacks on the sandbox host tell a status page.

The status page is an aiohttp receiver in the test (tests/webhook_receiver.py) that checks each
signature the way the README's receiver snippet does.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.model import RunStatus
from bot.store.runs import Store
from tests.fleet import free_port
from tests.replicas import two_replicas
from tests.sandbox import Sandbox
from tests.slack_world import ALICE, slack_world
from tests.test_e2e_cancel import slow_and_quick
from tests.test_e2e_leases import HOOK_SECRET, auto_rollback, deploy
from tests.test_e2e_slack import roll_back_by_slack, wait_final
from tests.webhook_receiver import HANG, Receiver, receiving

pytestmark = pytest.mark.e2e
SECRET = "status-page-secret-0123456789"
PAGER_SECRET = "pager-secret-9876543210"
QUICK = "retry_delays_s = [0.5, 0.5, 0.5, 0.5]\n"  # the real schedule spans ten minutes


def notify_table(*urls: str, timeout_s: float = 5.0) -> str:
    hooks = "".join(f'[[notify.webhooks]]\nurl = "{url}"\nsecret_env = "{env}"\n'
                    for url, env in zip(urls, ("STATUS_PAGE_SECRET", "PAGER_SECRET"),
                                        strict=False))
    return f"\n[notify]\n{QUICK}timeout_s = {timeout_s}\n{hooks}"


def write_runbook(sb: Sandbox, tmp: Path, extra: str, edit: Callable[[str], str] = str, *,
                  name: str = "rollbot") -> Path:
    path = tmp / f"{name}.toml"
    path.write_text(edit(sb.runbook.read_text()) + extra)
    return path


async def cli(runbook: Path, dsn: str, *args: str, cwd: Path) -> tuple[int, str]:
    """``rollbot …`` as a subprocess; the event loop keeps serving the receivers meanwhile."""
    env = {**os.environ, "ROLLBOT_CONFIG": str(runbook), "DATABASE_URL": dsn,
           "COLUMNS": "200", "STATUS_PAGE_SECRET": SECRET, "PAGER_SECRET": PAGER_SECRET}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=300)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return int(proc.returncode or 0), out.decode(errors="replace")


def assert_signed_run_body(page: Receiver, event: str) -> dict[str, object]:
    [one] = [r for r in page.received if r.event == event]
    page.check_signature(one)
    body = one.json
    assert one.headers["X-Rollbot-Event"] == event
    assert one.headers["X-Rollbot-Event-Id"] == body["id"]
    assert set(body) >= {"event", "sent_at", "occurred_at", "id", "environment", "run"}
    assert body["environment"] == "production"
    return body


async def test_a_cli_rollback_tells_the_status_page_started_then_succeeded_and_a_hanging_one_waits(
    production: Sandbox, store: Store, tmp_path: Path
) -> None:
    async with receiving(SECRET) as page, receiving(PAGER_SECRET, answers=[HANG]) as hung:
        runbook = write_runbook(production, tmp_path,
                                notify_table(page.url, hung.url, timeout_s=60))
        began = time.time()
        code, out = await cli(runbook, store.dsn, "rollback", "v1.2.2", "--yes",
                              "--reason", "checkout 500s", "--as", "alice", cwd=tmp_path)
        assert code == 0, out
        assert production.running_image() == "azora-api:v1.2.2"

        # delivered before the CLI exited, in order, each signed, with the run; the version
        # rolled back is quarantined (CI may not deploy it again), which is an event too
        assert [r.event for r in page.received] == ["rollback.started", "rollback.succeeded",
                                                    "version.quarantined"]
        quarantined = assert_signed_run_body(page, "version.quarantined")
        assert quarantined["quarantine"] == {"version": "v1.2.3", "by": "cli:alice",
                                             "reason": "checkout 500s"}
        started = assert_signed_run_body(page, "rollback.started")
        ended = assert_signed_run_body(page, "rollback.succeeded")
        assert started["run"] == {"id": 1, "from_version": "v1.2.3", "to_version": "v1.2.2",
                                  "procedure": "simple", "requested_by": "cli:alice",
                                  "outcome": "running", "live_message_url": None}
        assert ended["run"] == {**started["run"], "outcome": "succeeded"}  # type: ignore[dict-item]
        assert ended["reason"] == "checkout 500s" and started["id"] != ended["id"]

        # the receiver that hangs held up neither the run nor the other receiver: the run
        # ended long before its 60 s timeout, and the CLI left its events for `rollbot serve`
        run = await store.get_run(1)
        assert run is not None and run.status is RunStatus.SUCCEEDED
        assert run.finished_at is not None
        assert hung.received and run.finished_at.timestamp() < hung.received[0].at_wall + 30
        assert time.time() - began < 120
        left = await store.pool.fetch("SELECT event, state FROM notify_outbox WHERE url = $1"
                                      " ORDER BY id", hung.url)
        assert [(r["event"], r["state"]) for r in left] == [
            ("rollback.started", "pending"), ("rollback.succeeded", "pending"),
            ("version.quarantined", "pending")]

        # `rollbot serve` delivers what the CLI left, now that the receiver answers again
        served = tmp_path / "serve"
        served.mkdir()
        async with two_replicas(production, store.dsn, served, slack=False, count=1,
                                runbook_text=lambda text: text + notify_table(
                                    page.url, hung.url, timeout_s=60),
                                env={"STATUS_PAGE_SECRET": SECRET,
                                     "PAGER_SECRET": PAGER_SECRET}):
            await hung.wait_event("version.quarantined")
        assert [r.event for r in hung.received] == [
            "rollback.started", "rollback.started", "rollback.succeeded", "version.quarantined"]
        assert hung.received[0].json["id"] == hung.received[1].json["id"]  # the same event
        assert len(page.received) == 3  # what was delivered is not sent again

        # `rollbot notify test`: a signed test event to every webhook, each answer printed
        fine = write_runbook(production, tmp_path, notify_table(page.url), name="fine")
        code, out = await cli(fine, store.dsn, "notify", "test", "--as", "alice", cwd=tmp_path)
        assert code == 0, out
        assert f"delivered: {page.url} answered 200" in out
        [test] = page.events("test")
        page.check_signature(test)
        assert test.json["run"] is None and "cli:alice" in test.json["message"]

        # a webhook nobody answers at: non-zero, and a sentence that says what happened
        nowhere = f"http://127.0.0.1:{free_port()}/hooks/rollbot"
        gone = write_runbook(production, tmp_path, notify_table(nowhere), name="gone")
        code, out = await cli(gone, store.dsn, "notify", "test", cwd=tmp_path)
        assert code == 1, out
        assert f"NOT delivered: could not reach {nowhere}" in out
        assert "1 of 1 webhook(s) did not take the test event" in out
        # and a --url that is not configured: nothing sent, exit 2
        code, out = await cli(fine, store.dsn, "notify", "test", "--url", nowhere,
                              cwd=tmp_path)
        assert code == 2, out
        assert f"No [[notify.webhooks]] entry has the url {nowhere}" in out
        assert len(page.events("test")) == 1
        kinds = [(a.kind, a.detail) for a in await store.audit_entries()]
        assert any(k == "notify" and "delivered" in d for k, d in kinds)
        assert any(k == "refusal" and "notify test" in d for k, d in kinds)


async def test_a_failed_run_sends_rollback_failed_with_what_the_host_is_left_in(
    production: Sandbox, store: Store, tmp_path: Path
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}/health"

    def unhealthy(text: str) -> str:  # the health check after `up` never passes
        return text.replace('health_url = "http://127.0.0.1:28050/health"',
                            f'health_url = "{nowhere}"', 1).replace(
            "[environments.production.ssh]",
            "[environments.production.timeouts]\nhealth_s = 4\n[environments.production.ssh]",
            1)

    async with receiving(SECRET) as page:
        runbook = write_runbook(production, tmp_path, notify_table(page.url), unhealthy)
        code, out = await cli(runbook, store.dsn, "rollback", "v1.2.2", "--yes", cwd=tmp_path)
        assert code == 1, out
        assert [r.event for r in page.received] == ["rollback.started", "rollback.failed"]
        failed = assert_signed_run_body(page, "rollback.failed")
        run = failed["run"]
        assert isinstance(run, dict) and run["outcome"] == "failed" and run["id"] == 1
        assert failed["host_state"] and "health" in str(failed["message"]).lower()


async def test_two_replicas_send_the_countdown_rollback_quarantine_and_check_once_each(
    production: Sandbox, store: Store, tmp_path: Path
) -> None:
    async with receiving(SECRET, answers=[500, 500]) as page:
        def runbook(text: str) -> str:
            text = text.replace(  # the immediate check 3 s after the rollback
                "[environments.production.ssh]",
                "verify_after_minutes = [0.05]\n[environments.production.ssh]", 1)
            return auto_rollback(countdown=1)(text) + notify_table(page.url)

        async with two_replicas(production, store.dsn, tmp_path, webhook_secret=HOOK_SECRET,
                                runbook_text=runbook, slack=False,
                                env={"STATUS_PAGE_SECRET": SECRET}) as world:
            # CI: v1.2.3 failed to start; trusted, so a 1 s countdown, then the rollback
            answer = await world.hook("/hooks/deploy", deploy("start_failed"))
            assert answer.status_code == 202, answer.text
            for event in ("deploy.countdown", "rollback.started", "rollback.succeeded",
                          "version.quarantined", "verification.completed"):
                await page.wait_event(event, timeout=180)
            await asyncio.sleep(3)  # a second copy from the other replica would arrive by now

        # the first try got 500 twice: delivered later, by whichever replica claimed it
        firsts: dict[str, int] = {}
        for r in page.received:
            firsts[r.json["id"]] = firsts.get(r.json["id"], 0) + 1
            page.check_signature(r)
        assert sorted(firsts.values())[-1] == 3 and sum(firsts.values()) == len(firsts) + 2
        delivered = {r.json["id"]: r.json for r in page.received}
        kinds = sorted(b["event"] for b in delivered.values())
        assert kinds == sorted(["deploy.countdown", "rollback.started", "rollback.succeeded",
                                "version.quarantined", "verification.completed"])  # once each
        by_kind = {b["event"]: b for b in delivered.values()}
        countdown = by_kind["deploy.countdown"]
        assert countdown["run"] is None
        assert countdown["deploy"]["version"] == "v1.2.3"
        assert countdown["countdown"]["rolls_back_to"] == "v1.2.2"
        assert "failed to start" in countdown["countdown"]["triggers"][0]
        assert by_kind["rollback.started"]["run"]["requested_by"] == "rollbot (automatic)"
        assert by_kind["version.quarantined"]["quarantine"]["version"] == "v1.2.3"
        check = by_kind["verification.completed"]
        assert check["verification"]["tier"] == "immediate"
        assert check["run"]["id"] == by_kind["rollback.succeeded"]["run"]["id"]
        rows = await store.pool.fetch("SELECT state FROM notify_outbox")
        assert [r["state"] for r in rows] == ["delivered"] * 5


async def test_a_slack_rollback_links_its_live_message_in_every_event(
    production: Sandbox, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATUS_PAGE_SECRET", SECRET)
    async with receiving(SECRET) as page, slack_world(
            production, store.dsn, tmp_path,
            runbook_text=lambda text: text + notify_table(page.url)) as world:
        channel, ts = await roll_back_by_slack(world)
        await wait_final(world, ts)
        await page.wait_event("version.quarantined")
        assert world.problems() == [], world.problems()
    permalink = f"https://azora.slack.com/archives/{channel}/p{ts.replace('.', '')}"
    assert [r.event for r in page.received] == ["rollback.started", "rollback.succeeded",
                                                "version.quarantined"]
    for got in page.received:
        page.check_signature(got)
        run = got.json["run"]
        assert run["requested_by"] == ALICE and run["live_message_url"] == permalink


async def test_a_cancelled_run_and_its_resume_each_send_their_events(
    production: Sandbox, store: Store, tmp_path: Path
) -> None:
    async with receiving(SECRET) as page:
        runbook = write_runbook(production, tmp_path, notify_table(page.url), slow_and_quick)
        env = {**os.environ, "ROLLBOT_CONFIG": str(runbook), "DATABASE_URL": store.dsn,
               "COLUMNS": "200", "PYTHONUNBUFFERED": "1", "STATUS_PAGE_SECRET": SECRET}
        run = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "rollback", "v1.2.2", "--yes", "--as", "alice",
            cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        try:
            assert run.stdout is not None
            while b"[2/7] Stop services" not in await asyncio.wait_for(run.stdout.readline(),
                                                                        timeout=120):
                pass
            run.send_signal(signal.SIGINT)  # Ctrl-C: stop before the next step
            await asyncio.wait_for(run.communicate(), timeout=120)
        finally:
            if run.returncode is None:
                run.kill()
                await run.wait()
        assert run.returncode == 1
        assert [r.event for r in page.received] == ["rollback.started", "rollback.failed"]
        assert page.received[1].json["run"]["outcome"] == "cancelled"

        # Resume is a run of its own: started, then succeeded (and the quarantine)
        code, out = await cli(runbook, store.dsn, "resume", "1", "--yes", "--as", "bob",
                              cwd=tmp_path)
        assert code == 0, out
        resumed = [r.json for r in page.received[2:]]
        assert [b["event"] for b in resumed] == ["rollback.started", "rollback.succeeded",
                                                 "version.quarantined"]
        assert {b["run"]["id"] for b in resumed} == {2}
        assert resumed[0]["run"]["requested_by"] == "cli:bob"
        for got in page.received:
            page.check_signature(got)
