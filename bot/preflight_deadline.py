"""Pre-flight's deadline: which check it is still waiting for, and the refusal when time runs out.

Every read pre-flight makes has its own bound, but a bound per read still lets a slow host keep a
card (or a run that two people approved) at "pre-flight" for many minutes, and an await with no
bound at all (a pool, a channel that never opens) would keep it there forever. So the whole
pre-flight has one deadline. The code announces each check before its reads (``checking``); when
the deadline passes, the refusal names the check and the host it was still waiting for.

The announcement goes through a context variable holding a mutable ``PreflightWatch``, so checks
run in child tasks (one per host) report to the same watch, and code that runs outside a
pre-flight (the steps, the verification checks) announces to nobody.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar

from bot.errors import PreflightTimeout

_watch: ContextVar[PreflightWatch | None] = ContextVar("rollbot_preflight_watch", default=None)


class PreflightWatch:
    """What pre-flight is working on now, per host (the newest announced check of each)."""

    def __init__(self) -> None:
        self._waiting: dict[str, str] = {}

    def mark(self, check: str, host: str) -> None:
        self._waiting[host] = check

    def waiting_for(self) -> str:
        """"'Backups dir writable' on web-1", one per host, or what to say when nothing was."""
        if not self._waiting:
            return "its first check (nothing had answered yet)"
        return "; ".join(f"'{check}' on {host}" for host, check in self._waiting.items())

    def refusal(self, seconds: float) -> str:
        return (f"pre-flight did not finish in {seconds:g} s: still waiting for "
                f"{self.waiting_for()}. Look at that host first; if it is only slow (a large "
                "backup to check), raise [timeouts] preflight_s for this environment.")


def checking(check: str, host: str) -> None:
    """Pre-flight now waits for ``check`` on ``host``; named if the deadline passes meanwhile."""
    watch = _watch.get()
    if watch is not None:
        watch.mark(check, host)


@asynccontextmanager
async def preflight_deadline(seconds: float) -> AsyncIterator[PreflightWatch]:
    """Run the body within ``seconds``; past them, raise ``PreflightTimeout`` naming the check.

    The body is cancelled at the deadline, so a remote command still running is killed on the
    host (the SSH edge does that when cancelled). A ``TimeoutError`` raised inside the body for
    another reason passes through unchanged.
    """
    watch = PreflightWatch()
    token = _watch.set(watch)
    timer = asyncio.timeout(seconds)
    try:
        async with timer:
            yield watch
    except TimeoutError:
        if not timer.expired():
            raise
        raise PreflightTimeout(watch.refusal(seconds)) from None
    finally:
        _watch.reset(token)
