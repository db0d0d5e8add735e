"""``GET /healthz``'s answer, cached about a second: probes and floods cost one database ping."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class CachedHealth:
    """The last probe's answer for ``ttl_s``; concurrent askers share one probe in flight."""

    def __init__(self, probe: Callable[[], Awaitable[bool]], *, ttl_s: float = 1.0,
                 timeout_s: float = 5.0) -> None:
        self._probe = probe
        self._ttl_s = ttl_s
        self._timeout_s = timeout_s
        self._answer = False
        self._at = float("-inf")
        self._probing: asyncio.Task[bool] | None = None
        self.probes = 0  # how many times the database was really asked (tests read it)

    async def healthy(self) -> bool:
        if time.monotonic() - self._at < self._ttl_s:
            return self._answer
        if self._probing is None:
            self._probing = asyncio.create_task(self._ask())
        probing = self._probing
        return await asyncio.shield(probing)

    async def _ask(self) -> bool:
        self.probes += 1
        try:
            answer = await asyncio.wait_for(self._probe(), self._timeout_s)
        except Exception as exc:  # a wedged main loop or database: unhealthy, say why in the log
            log.warning("health probe failed: %s", exc or type(exc).__name__)
            answer = False
        self._answer, self._at, self._probing = answer, time.monotonic(), None
        return answer
