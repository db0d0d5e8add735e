"""A status page's webhook endpoint, in the test: records what rollbot POSTs, answers as told."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bot.autorollback.contract import verify
from tests.fleet import free_port

HANG = -1  # an answer that never comes (until the receiver stops)


@dataclass(frozen=True)
class Received:
    """One POST as it arrived."""

    at: float       # time.monotonic()
    at_wall: float  # time.time(), to compare with the database's timestamps
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data

    @property
    def event(self) -> str:
        return str(self.json["event"])


@dataclass
class Receiver:
    """``answers``: the status of each request in turn (``HANG``: none), then 200."""

    secret: str
    answers: list[int] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    received: list[Received] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/rollbot"

    def events(self, name: str | None = None) -> list[Received]:
        return [r for r in self.received if name is None or r.event == name]

    def check_signature(self, got: Received, *, max_age_s: int = 300) -> None:
        """As a receiver does (README): raises BadSignature when it does not verify."""
        verify(self.secret, timestamp=got.headers.get("X-Rollbot-Timestamp"),
               signature=got.headers.get("X-Rollbot-Signature"), body=got.body,
               now=time.time(), max_age_s=max_age_s)

    async def wait_for(self, found: Callable[[], Any], *, timeout: float = 60,
                       what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while not (value := found()):
            assert time.monotonic() < deadline, (
                f"not received within {timeout} s: {what}; got "
                f"{[(r.event, r.json.get('id')) for r in self.received]}")
            await asyncio.sleep(0.05)
        return value

    async def wait_event(self, name: str, *, count: int = 1, timeout: float = 60
                         ) -> list[Received]:
        return list(await self.wait_for(lambda: len(self.events(name)) >= count
                                        and self.events(name), timeout=timeout,
                                        what=f"{count} x {name}"))

    async def _handle(self, request: web.Request) -> web.Response:
        self.received.append(Received(at=time.monotonic(), at_wall=time.time(),
                                      headers=dict(request.headers), body=await request.read()))
        status = self.answers.pop(0) if self.answers else 200
        if status == HANG:
            await self.stopping.wait()
            status = 503
        return web.Response(status=status, text="ok" if status < 300 else "not now")


@asynccontextmanager
async def receiving(secret: str, answers: list[int] | None = None) -> AsyncIterator[Receiver]:
    """A receiver listening on a free port until the block ends."""
    receiver = Receiver(secret=secret, answers=list(answers or []))
    app = web.Application()
    app.router.add_post("/hooks/rollbot", receiver._handle)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", receiver.port).start()
    try:
        yield receiver
    finally:
        receiver.stopping.set()
        await runner.cleanup()
