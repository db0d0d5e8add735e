"""Before Bolt: Slack's signature checked, and a request already seen by any replica refused.

Forged, stale and replayed requests get 401 and an audit entry (``handlers/refusals.py`` bounds
how many are written one by one). A replay is told by its signature, remembered in the database
(``SeenSignatures``, in the engine), so every rollbot process behind the load balancer refuses
it. Slack's own retries (``X-Slack-Retry-Num``) of a request already taken are answered 200 and
run nothing.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from aiohttp import web
from slack_sdk.signature import SignatureVerifier

from bot.errors import StoreError
from handlers.refusals import RefusalAudit

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
_MAX_AGE_S = 300  # Slack's own rule: refuse requests whose timestamp is over 5 minutes old
PRUNE_EVERY_S = 60.0

_UNIX_SECONDS = re.compile(r"[0-9]{1,12}")  # ASCII only: str.isdigit() also takes "١٢٣"
_SLACK_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")


def signature_problem(verifier: SignatureVerifier, *, body: bytes, timestamp: str,
                      signature: str, now: float) -> str | None:
    """Why a request is not signed by Slack, or None when it is; never raises.

    slack_sdk's ``is_valid`` raises on a non-numeric timestamp (``int()``) and on a non-ASCII
    signature (``hmac.compare_digest``): checked here first, so such a request is a 401.
    """
    missing = [name for name, value in (("X-Slack-Request-Timestamp", timestamp),
                                        ("X-Slack-Signature", signature)) if not value]
    if missing:
        return f"no {' and no '.join(missing)} header (not signed by Slack)"
    if _UNIX_SECONDS.fullmatch(timestamp) is None:
        return f"timestamp {timestamp[:20]!a} is not a Unix time in seconds"
    if abs(now - int(timestamp)) > _MAX_AGE_S:
        return (f"timestamp {timestamp} is more than {_MAX_AGE_S // 60} minutes away from now "
                "(a replay, or a wrong clock)")
    if _SLACK_SIGNATURE.fullmatch(signature) is None:
        return f"signature {signature[:12]!a}… is not 'v0=' and 64 hex digits"
    if not verifier.is_valid(body=body, timestamp=timestamp, signature=signature):
        return "signature does not match the body (another signing secret, or a changed body)"
    return None


class Seen(Protocol):
    """Where signatures already taken are remembered (the engine's ``SeenSignatures``)."""

    async def first_sighting(self, signature: str) -> bool: ...

    async def prune(self) -> int: ...


class ReplayGuard:
    """An aiohttp middleware for ``POST /slack/events``; runs on the ack path's loop."""

    def __init__(self, signing_secret: str, *, seen: Seen, refusals: RefusalAudit) -> None:
        self._verifier = SignatureVerifier(signing_secret)
        self._seen = seen
        self._refusals = refusals
        self._pruner: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Forget old signatures every minute, off the ack path."""
        self._pruner = asyncio.create_task(self._prune_forever())

    async def close(self) -> None:
        if self._pruner is not None:
            self._pruner.cancel()
            await asyncio.gather(self._pruner, return_exceptions=True)

    async def _prune_forever(self) -> None:
        while True:
            await asyncio.sleep(PRUNE_EVERY_S)
            try:
                await self._seen.prune()
            except Exception as exc:  # the next minute tries again
                log.warning("could not forget old Slack request signatures: %s", exc)

    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
        if request.path != EVENTS_PATH or request.method != "POST":
            return await handler(request)
        body = await request.read()
        signature = request.headers.get("X-Slack-Signature", "")
        problem = signature_problem(
            self._verifier, body=body, timestamp=request.headers.get(
                "X-Slack-Request-Timestamp", ""), signature=signature, now=time.time())
        if problem is not None:
            self._refusals.record(f"refused a Slack request with a bad signature: {problem}")
            return web.json_response({"error": "invalid request"}, status=401)
        try:
            first = await self._seen.first_sighting(signature)
        except StoreError as exc:
            log.error("Slack request not taken: %s", exc)
            return web.json_response({"error": "rollbot's database is unreachable"}, status=503)
        if not first:
            if request.headers.get("X-Slack-Retry-Num"):
                # Slack re-delivering what we already took: answer so it stops, run nothing.
                return web.Response(status=200)
            self._refusals.record(
                "refused a replayed Slack request (same signature as an earlier one)")
            return web.json_response({"error": "replayed request"}, status=401)
        return await handler(request)
