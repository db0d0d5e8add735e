"""The acknowledgement path: replays refused by every replica, floods audited in bulk, acks that
never wait for work, and rollbot listening where HOST says.

rollbot serves the local Slack emulator over real HTTP, with its real database; the runbook's host
is never contacted (``/rollback help`` and refusals need no SSH), so no sandbox is needed.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from bot.config import Settings, load_runbook
from bot.errors import ConfigError
from bot.model import AuditEntry
from bot.store.runs import Store
from handlers.server import running, running_without_slack
from slack_emulator.signing import signed_headers
from tests.slack_world import (
    ALICE,
    EXAMPLE_RUNBOOK,
    INCIDENTS,
    SECRET,
    SLACK_TABLE,
    TOKEN,
    SlackWorld,
    slack_world_without_host,
)


@pytest.fixture
async def world(store: Store, tmp_path: Path) -> AsyncIterator[SlackWorld]:
    async with slack_world_without_host(store.dsn, tmp_path) as w:
        yield w


def help_command(world: SlackWorld) -> bytes:
    """`/rollback help` from Alice in #incidents, as Slack would post it."""
    return urlencode({
        "command": "/rollback", "text": "help", "user_id": ALICE, "user_name": "alice",
        "channel_id": INCIDENTS, "channel_name": "incidents", "team_id": world.emu.ident.team_id,
        "api_app_id": world.emu.ident.app_id,
        "response_url": world.emu.mint_response_url(INCIDENTS, ALICE),
        "trigger_id": world.emu.mint_trigger_id(ALICE),
    }).encode()


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def post(port: int, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(f"http://127.0.0.1:{port}/slack/events", content=body,
                                 headers={**FORM, **headers}, timeout=10)


def answers(world: SlackWorld) -> int:
    """How many times rollbot answered through a response_url (the help, once per command)."""
    return sum(1 for c in world.emu.calls if c.method == "response_url")


async def refusals(store: Store, *, at_least: int, within_s: float = 10) -> list[AuditEntry]:
    deadline = time.monotonic() + within_s
    while True:
        found = [a for a in await store.audit_entries(limit=1000) if a.kind == "refusal"]
        if len(found) >= at_least or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


@pytest.fixture
async def second_replica(world: SlackWorld, store: Store, tmp_path: Path
                         ) -> AsyncIterator[int]:
    """Another rollbot process's front on the same database: the port it serves on."""
    runbook = tmp_path / "rollbot.toml"
    settings = Settings(database_url=store.dsn, rollbot_config=runbook, slack_bot_token=TOKEN,
                        slack_signing_secret=SECRET, slack_api_url=world.emu.api_url, port=0)
    async with running(settings, load_runbook(runbook)) as other:
        yield other.port
        await other.front.wait_idle(30)


async def test_a_request_taken_by_one_replica_is_refused_by_the_other(
    world: SlackWorld, second_replica: int, store: Store
) -> None:
    body = help_command(world)
    signed = signed_headers(SECRET, body)
    first = await post(world.service.port, body, signed)
    assert first.status_code == 200
    await world.emu.wait_for(lambda: answers(world) == 1, timeout=10)

    # someone replays the very same signed bytes to the other replica: refused and audited
    replayed = await post(second_replica, body, signed)
    assert replayed.status_code == 401
    assert replayed.json() == {"error": "replayed request"}
    audited = await refusals(store, at_least=1)
    assert [a.actor for a in audited] == ["slack"]
    assert "replayed Slack request" in audited[0].detail

    # Slack's own retry of what was taken is answered 200 and runs nothing, on either replica
    for port in (world.service.port, second_replica):
        retried = await post(port, body, {**signed, "X-Slack-Retry-Num": "1",
                                          "X-Slack-Retry-Reason": "http_timeout"})
        assert retried.status_code == 200
    await asyncio.sleep(0.3)
    assert answers(world) == 1  # the help was given once
    assert len(await refusals(store, at_least=1)) == 1  # retries are not refusals


async def test_an_unsigned_flood_is_refused_and_audited_in_bulk(
    world: SlackWorld, store: Store, tmp_path: Path
) -> None:
    flood = 300
    runbook = tmp_path / "rollbot.toml"
    settings = Settings(database_url=store.dsn, rollbot_config=runbook, slack_bot_token=TOKEN,
                        slack_signing_secret=SECRET, slack_api_url=world.emu.api_url, port=0)
    async with running(settings, load_runbook(runbook)) as service:
        body = help_command(world)
        async with httpx.AsyncClient() as client:
            async def unsigned(i: int) -> int:
                r = await client.post(f"http://127.0.0.1:{service.port}/slack/events",
                                      content=body, headers={**FORM, "X-Slack-Signature": "x"},
                                      timeout=30)
                return r.status_code
            statuses = await asyncio.gather(*(unsigned(i) for i in range(flood)))
        assert statuses == [401] * flood
        # rollbot stops here: what it counted is written as one entry
    entries = await refusals(store, at_least=1)
    one_by_one = [a for a in entries if "more Slack requests refused since" not in a.detail]
    counted = [a for a in entries if "more Slack requests refused since" in a.detail]
    assert len(entries) < flood // 10, len(entries)
    assert len(one_by_one) == 20
    assert all("no X-Slack-Request-Timestamp" in a.detail for a in one_by_one)
    assert len(counted) == 1
    held = int(counted[0].detail.split(" ", 1)[0])
    assert len(one_by_one) + held == flood
    assert "UTC" in counted[0].detail and "the last: refused a Slack request" in counted[0].detail
    assert answers(world) == 0  # no listener ran


def _send_in_thread(port: int, body: bytes, headers: dict[str, str]) -> tuple[int, float]:
    start = time.monotonic()
    r = httpx.post(f"http://127.0.0.1:{port}/slack/events", content=body,
                   headers={**FORM, **headers}, timeout=10)
    return r.status_code, time.monotonic() - start


async def test_the_ack_does_not_wait_for_work_that_blocks_the_main_loop(
    world: SlackWorld
) -> None:
    # a first command warms Bolt up (it asks Slack who it is once) and is answered
    assert (await world.command(ALICE, "help")).status == 200
    await world.emu.wait_for(lambda: answers(world) == 1, timeout=10)

    # Now the main loop, where rollbot's work runs, is stuck for 2 s (this test's loop is it:
    # time.sleep blocks it). A command sent meanwhile is still acknowledged at once.
    body = help_command(world)
    result: list[tuple[int, float]] = []
    sender = threading.Thread(target=lambda: result.append(
        _send_in_thread(world.service.port, body, signed_headers(SECRET, body))))
    sender.start()
    time.sleep(2.0)  # the point: the main loop blocked, as by slow work
    sender.join(timeout=10)
    assert result and result[0][0] == 200
    assert result[0][1] < 0.5, f"the ack took {result[0][1]:.2f} s"

    # the work itself waited for the main loop, then ran: the help is answered
    await world.emu.wait_for(lambda: answers(world) == 2, timeout=10)


async def test_healthz_is_served_from_the_ack_loop(world: SlackWorld) -> None:
    async with httpx.AsyncClient() as client:
        answers_ = await asyncio.gather(*(
            client.get(f"http://127.0.0.1:{world.service.port}/healthz", timeout=10)
            for _ in range(20)))
    assert {(r.status_code, r.text) for r in answers_} == {(200, '{"ok": true}')}


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


async def test_rollbot_listens_where_HOST_says(store: Store, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    runbook = tmp_path / "rollbot.toml"
    runbook.write_text(EXAMPLE_RUNBOOK.read_text().split("\n[slack]", 1)[0])
    monkeypatch.delenv("HOST", raising=False)
    assert Settings(_env_file=None).host == "127.0.0.1"  # type: ignore[call-arg]
    monkeypatch.setenv("HOST", "127.0.0.2")
    settings = Settings(_env_file=None, database_url=store.dsn,  # type: ignore[call-arg]
                        rollbot_config=runbook, port=0)
    assert settings.host == "127.0.0.2"
    async with running_without_slack(settings, load_runbook(runbook)) as service:
        assert _reachable("127.0.0.2", service.port)
        assert not _reachable("127.0.0.1", service.port)
        async with httpx.AsyncClient() as client:
            health = await client.get(f"http://127.0.0.2:{service.port}/healthz", timeout=10)
        assert health.json() == {"ok": True}


async def test_slack_over_http_without_a_signing_secret_says_what_to_set(tmp_path: Path) -> None:
    runbook = tmp_path / "rollbot.toml"
    runbook.write_text(EXAMPLE_RUNBOOK.read_text() + SLACK_TABLE)
    settings = Settings(_env_file=None, rollbot_config=runbook,  # type: ignore[call-arg]
                        slack_bot_token=TOKEN, slack_signing_secret=None, slack_app_token=None)
    with pytest.raises(ConfigError, match="SLACK_SIGNING_SECRET must be set to serve Slack over "
                                          r"HTTP \(or set SLACK_APP_TOKEN for Socket Mode\)"):
        async with running(settings, load_runbook(runbook)):
            pass


async def test_work_beyond_the_limit_is_refused_with_a_sentence(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("handlers.ack_loop.MAX_WORK_IN_FLIGHT", 3)
    async with slack_world_without_host(store.dsn, tmp_path) as world:
        assert (await world.command(ALICE, "help")).status == 200  # Bolt warmed up
        await world.emu.wait_for(lambda: answers(world) == 1, timeout=10)
        # the main loop is stuck; five commands come: three are taken, two are told to retry
        bodies = [help_command(world) for _ in range(5)]
        results: list[tuple[int, str]] = []

        def send(body: bytes) -> None:
            r = httpx.post(f"http://127.0.0.1:{world.service.port}/slack/events", content=body,
                           headers={**FORM, **signed_headers(SECRET, body)}, timeout=10)
            results.append((r.status_code, r.text))

        senders = [threading.Thread(target=send, args=(b,)) for b in bodies]
        for t in senders:
            t.start()
        for t in senders:  # the point: the main loop blocked (joining), as by slow work
            t.join(timeout=10)
        assert [status for status, _ in results] == [200] * 5
        busy = [text for _, text in results if "rollbot is busy" in text]
        assert len(busy) == 2, results
        assert "Nothing was done; try again in a minute." in busy[0]
        # the three taken are answered once the main loop is free
        await world.emu.wait_for(lambda: answers(world) == 4, timeout=10)
        await asyncio.sleep(0.3)
        assert answers(world) == 4


async def test_an_unsigned_flood_of_deploy_hooks_is_audited_in_bulk(store: Store,
                                                                    tmp_path: Path) -> None:
    runbook = tmp_path / "rollbot.toml"
    runbook.write_text(EXAMPLE_RUNBOOK.read_text())
    settings = Settings(_env_file=None, database_url=store.dsn,  # type: ignore[call-arg]
                        rollbot_config=runbook, port=0, rollbot_webhook_secret="ci-secret")
    flood = 120
    async with running_without_slack(settings, load_runbook(runbook)) as service:
        async with httpx.AsyncClient() as client:
            statuses = await asyncio.gather(*(
                client.post(f"http://127.0.0.1:{service.port}/hooks/deploy", content=b"{}",
                            timeout=30) for _ in range(flood)))
        assert {r.status_code for r in statuses} == {401}
    entries = await refusals(store, at_least=1)
    counted = [a for a in entries if "more deploy hook requests refused since" in a.detail]
    assert len(entries) == 21 and len(counted) == 1
    assert all(a.actor == "ci" for a in entries)
    assert int(counted[0].detail.split(" ", 1)[0]) == flood - 20


async def test_a_host_or_port_rollbot_cannot_listen_on_is_said_plainly(
    store: Store, tmp_path: Path
) -> None:
    runbook = tmp_path / "rollbot.toml"
    runbook.write_text(EXAMPLE_RUNBOOK.read_text())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for host, port_ in (("no-such-host.invalid", 0), ("127.0.0.1", port)):
            settings = Settings(_env_file=None, database_url=store.dsn,  # type: ignore[call-arg]
                                rollbot_config=runbook, host=host, port=port_)
            with pytest.raises(ConfigError, match=f"rollbot cannot listen on {host}:{port_}: .*"
                                                  "Set HOST to an address of this machine"):
                async with running_without_slack(settings, load_runbook(runbook)):
                    pass
