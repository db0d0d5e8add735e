"""Requests to /slack/events without a well-formed Slack signature get 401, never 500.

Someone (a scanner, a misconfigured proxy, an attacker) posts to rollbot's public URL with
missing or malformed signature headers: each answer is 401, each is in the audit log, and no
listener runs. Real HTTP, byte for byte, so headers can be anything a client can send. The
runbook's host is never contacted: these requests never get that far.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from bot.store.runs import Store
from slack_emulator.signing import signature
from tests.slack_world import ALICE, INCIDENTS, SECRET, SlackWorld, slack_world_without_host


@pytest.fixture
async def world(store: Store, tmp_path: Path) -> AsyncIterator[SlackWorld]:
    async with slack_world_without_host(store.dsn, tmp_path) as w:
        yield w


def help_command(world: SlackWorld) -> bytes:
    """`/rollback help` from Alice in #incidents, as Slack would post it."""
    response_url = world.emu.mint_response_url(INCIDENTS, ALICE)
    return urlencode({
        "command": "/rollback", "text": "help", "user_id": ALICE, "user_name": "alice",
        "channel_id": INCIDENTS, "channel_name": "incidents", "team_id": world.emu.ident.team_id,
        "api_app_id": world.emu.ident.app_id, "response_url": response_url,
        "trigger_id": world.emu.mint_trigger_id(ALICE),
    }).encode()


async def post_raw(port: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    """POST /slack/events with exactly these header bytes; the HTTP status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = [b"POST /slack/events HTTP/1.1", b"Host: 127.0.0.1",
            b"Content-Type: application/x-www-form-urlencoded",
            b"Content-Length: " + str(len(body)).encode(), b"Connection: close",
            *(name + b": " + value for name, value in headers)]
    writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), timeout=10)
    writer.close()
    await writer.wait_closed()
    return int(status_line.split()[1])


TS, SIG = b"X-Slack-Request-Timestamp", b"X-Slack-Signature"


def malformed(body: bytes) -> dict[str, list[tuple[bytes, bytes]]]:
    now = str(int(time.time()))
    good = signature(SECRET, int(now), body).encode()
    return {
        "no headers": [],
        "no signature": [(TS, now.encode())],
        "no timestamp": [(SIG, good)],
        "empty values": [(TS, b""), (SIG, b"")],
        "word timestamp": [(TS, b"yesterday"), (SIG, good)],
        "float timestamp": [(TS, now.encode() + b".5"), (SIG, good)],
        "negative timestamp": [(TS, b"-" + now.encode()), (SIG, good)],
        "5000-digit timestamp": [(TS, b"9" * 5000), (SIG, good)],
        "non-ASCII digits": [(TS, "١٧٦٤٣٦٠٠٠٠".encode()), (SIG, good)],
        "non-ASCII timestamp": [(TS, "17643600é".encode()), (SIG, good)],
        "non-hex signature": [(TS, now.encode()), (SIG, b"v0=" + b"zz" * 32)],
        "short signature": [(TS, now.encode()), (SIG, b"v0=abc123")],
        "long signature": [(TS, now.encode()), (SIG, good + b"00")],
        "no version": [(TS, now.encode()), (SIG, good[3:])],
        "other version": [(TS, now.encode()), (SIG, b"v1=" + good[3:])],
        "non-ASCII signature": [(TS, now.encode()), (SIG, b"v0=" + "é".encode() * 64)],
        "latin-1 signature": [(TS, now.encode()), (SIG, b"v0=" + b"\xe9" * 64)],
        "wrong secret": [(TS, now.encode()), (SIG, signature(SECRET + "x", int(now), body)
                                              .encode())],
    }


async def test_unsigned_or_malformed_requests_get_401_an_audit_entry_and_run_nothing(
    world: SlackWorld, store: Store
) -> None:
    port = world.service.port
    body = help_command(world)
    cases = malformed(body)
    statuses = {name: await post_raw(port, body, headers) for name, headers in cases.items()}
    assert statuses == dict.fromkeys(cases, 401)

    # every refusal is in the audit log, saying what was wrong
    deadline = time.monotonic() + 10
    while True:
        refusals = [a for a in await store.audit_entries() if a.kind == "refusal"]
        if len(refusals) >= len(cases) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert len(refusals) == len(cases), [a.detail for a in refusals]
    details = "\n".join(a.detail for a in refusals)
    assert "no X-Slack-Signature" in details and "timestamp" in details
    # no listener ran: nothing reached Slack (the help text would come back on the response_url)
    assert world.emu.calls == []
    assert world.posted() == [] and world.emu.ephemerals(INCIDENTS) == []

    # the same body, signed, is answered: the listener runs and Alice gets the help
    now = int(time.time())
    ok = await post_raw(port, body, [(TS, str(now).encode()),
                                     (SIG, signature(SECRET, now, body).encode())])
    assert ok == 200
    await world.emu.wait_for(lambda: world.emu.calls, timeout=10)
