"""The HTTP edge: health, version and smoke URLs of the service (httpx)."""

from __future__ import annotations

import asyncio
import time

import httpx

from bot.model import HealthPoll


class HttpxProbe:
    """Polls and fetches with one shared ``httpx.AsyncClient`` owned by the caller."""

    def __init__(self, client: httpx.AsyncClient, *, request_timeout_s: float = 5.0) -> None:
        self._client = client
        self._request_timeout_s = request_timeout_s

    async def fetch(self, url: str, *, timeout_s: float | None = None) -> tuple[int | None, str]:
        """GET ``url``: (status, body text) or (None, the reason it could not be fetched)."""
        limit = timeout_s or self._request_timeout_s
        try:
            # httpx's timeout bounds each phase (connect, each read); a server that trickles
            # bytes could outlast it, so the whole request has the same bound too.
            async with asyncio.timeout(limit + 1):
                response = await self._client.get(url, timeout=limit, follow_redirects=False)
        except TimeoutError:
            return None, f"no complete answer within {limit:g} s"
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return response.status_code, response.text[:2000]

    async def wait_healthy(self, url: str, *, deadline_s: float, interval_s: float) -> HealthPoll:
        """Poll until a 2xx answer or the deadline: the caller goes on the moment it is green."""
        started = time.monotonic()
        attempts = 0
        status: int | None = None
        detail = "not tried"
        while True:
            attempts += 1
            remaining = deadline_s - (time.monotonic() - started)
            status, body = await self.fetch(url, timeout_s=max(0.1, min(
                self._request_timeout_s, remaining)))
            detail = body.strip().splitlines()[0][:200] if body.strip() else ""
            if status is not None and 200 <= status < 300:
                return HealthPoll(True, status, detail, attempts, time.monotonic() - started)
            if time.monotonic() - started + interval_s >= deadline_s:
                return HealthPoll(False, status, detail, attempts, time.monotonic() - started)
            await asyncio.sleep(interval_s)
