"""Graceful stop of `rollbot serve` on SIGTERM: drain, stop runs between steps, hand leases over.

The first SIGTERM (or SIGINT): every request, ``/healthz`` included, answers 503 so the load
balancer drains this replica, then the listener closes; a running rollback finishes its current
step and stops before the next one (the cancel path: Resume / Put back are offered when
production is left down); watches and countdowns are handed to another replica at once; the
process exits 0 once its runs have ended and their messages are delivered. A second signal, or
``GRACE_S`` without getting there, exits at once with status 1.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiohttp import web

from bot.app import App

log = logging.getLogger(__name__)

GRACE_S = 60.0   # the longest a graceful stop may take (a step's own timeout can be longer)
DRAIN_S = 2.0    # 503s before the listener closes: a load balancer's health checks see them
SHUTTING_DOWN = "rollbot was shutting down."


_OnLoop = Callable[[Coroutine[Any, Any, None]], Awaitable[None]]


class Draining:
    """While rollbot stops: 503 for every request, then the listening sockets close."""

    def __init__(self) -> None:
        self.active = False
        self._sites: list[tuple[web.BaseSite, _OnLoop]] = []

    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
        if self.active:
            return web.json_response({"ok": False, "error": "rollbot is shutting down"},
                                     status=503, headers={"Connection": "close"})
        return await handler(request)

    def serve(self, app: web.Application) -> None:
        """Put the 503 in front of everything ``app`` serves (before it starts)."""
        app.middlewares.insert(0, self.middleware)

    def closes(self, site: web.BaseSite, *, on: _OnLoop) -> None:
        """Close ``site`` when draining ends; ``on`` runs a coroutine on the site's own loop."""
        self._sites.append((site, on))

    async def stop_listening(self) -> None:
        for site, on in self._sites:
            await on(site.stop())
        self._sites.clear()


class StopSignals:
    """SIGTERM and SIGINT: the first asks for a graceful stop, the second for an exit now."""

    def __init__(self) -> None:
        self.first = asyncio.Event()
        self.second = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._received)

    def _received(self) -> None:
        if self.first.is_set():
            self.second.set()
        self.first.set()


async def stop_gracefully(*, app: App, drain: Draining, close: Callable[[], Awaitable[None]],
                          signals: StopSignals, grace_s: float = GRACE_S,
                          drain_s: float = DRAIN_S) -> None:
    """Stop as the module says; returns when done, exits the process when forced."""
    async def steps() -> None:
        drain.active = True
        runs = app.rollbot.stop_runs(because=SHUTTING_DOWN)
        handed = await app.auto.hand_over()
        print(f"rollbot: stopping: {len(runs)} running rollback(s) stop after their current "
              f"step; {len(handed)} watch(es) or countdown(s) handed to the other replicas",
              flush=True)
        await asyncio.sleep(drain_s)
        await drain.stop_listening()
        await close()  # the runs end, their messages are delivered, connections close

    stopping = asyncio.create_task(steps())
    forced = asyncio.create_task(signals.second.wait())
    done, _ = await asyncio.wait([stopping, forced], timeout=grace_s,
                                 return_when=asyncio.FIRST_COMPLETED)
    forced.cancel()
    if stopping in done:
        stopping.result()
        return
    why = "a second stop signal" if forced in done else f"not stopped after {grace_s:g} s"
    log.error("rollbot: exiting now (%s); a run still going is left to the other replicas, "
              "which mark it interrupted", why)
    print(f"rollbot: exiting now ({why})", flush=True)
    sys.stderr.flush()
    os._exit(1)
