"""Two replicas behind haproxy: a Slack request taken by one is refused by the other.

An attacker who captured a signed request (a slash command, a click) replays it within Slack's
5 minutes; haproxy hands the replay to the other replica. That replica refuses it (401) and writes
an audit entry, because the signatures already taken are in the shared database. Slack's own
retry of the same request (``X-Slack-Retry-Num``) is answered 200 and runs nothing.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from bot.store.runs import Store
from slack_emulator import SendResult
from tests.replicas import REPLICA_HEADER, served_by, two_replicas
from tests.sandbox import Sandbox
from tests.slack_world import ALICE, INCIDENTS

pytestmark = pytest.mark.e2e


async def resend(url: str, sent: SendResult, **extra: str) -> httpx.Response:
    """The same request, byte for byte, through haproxy; ``extra`` headers added."""
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(url, content=sent.request.body,
                                 headers={**sent.request.headers, **extra})


async def test_a_replayed_request_is_refused_by_the_other_replica(
    production: Sandbox, store: Store, tmp_path: Path
) -> None:
    async with two_replicas(production, store.dsn, tmp_path) as world:
        url = f"{world.balancer.url}/slack/events"
        helped = lambda: len(world.emu.ephemerals(INCIDENTS, ALICE))  # noqa: E731
        first = await world.command(ALICE, "help", INCIDENTS)
        assert first.status == 200
        await world.emu.wait_for(lambda: helped() == 1, timeout=30)

        # the replay goes to the other replica (round robin), which refuses it
        replay = await resend(url, first)
        assert replay.headers[REPLICA_HEADER] != served_by(first)
        assert (replay.status_code, replay.json()) == (401, {"error": "replayed request"})
        deadline = time.monotonic() + 10
        while not (refused := [a for a in await store.audit_entries() if a.kind == "refusal"]):
            assert time.monotonic() < deadline, "no audit entry for the replay"
            await asyncio.sleep(0.1)
        assert [(a.actor, "replayed Slack request" in a.detail) for a in refused] == [
            ("slack", True)]

        # Slack retrying what it sent is answered 200 by either replica, and runs nothing
        retries = [await resend(url, first, **{"X-Slack-Retry-Num": str(n),
                                              "X-Slack-Retry-Reason": "http_timeout"})
                   for n in (1, 2)]
        assert [r.status_code for r in retries] == [200, 200]
        assert {r.headers[REPLICA_HEADER] for r in retries} == {"r0", "r1"}
        await asyncio.sleep(0.5)
        assert helped() == 1  # Alice got the help once
        assert len([a for a in await store.audit_entries() if a.kind == "refusal"]) == 1
