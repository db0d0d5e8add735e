"""One Slack Web API budget for the whole process: each method paced at its tier, in line, shared.

Slack limits calls "per method per app per workspace" (``chat.postMessage``: per channel), so
every run, every writer and every front of the process draws from the same buckets. A call waits
for its turn and is never dropped. The calls of one bucket go one at a time, in the order they
asked: the next call of a method is sent only after the previous one's answer came back, so a 429
(``hold``) is known before anyone else of that method goes, and nobody goes before its
``Retry-After``. The budget is thread-safe: Bolt's own calls run on the ack loop's thread.

Paces are a little under Slack's (a smaller burst), so that calls arriving bunched up at Slack
still fit in its bucket. Sources: Slack's "Rate limits" page and each method's reference ("Facts").
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

# A method's calls share one bucket; chat.postMessage's calls one bucket per channel.
BudgetKey = tuple[str, str]


@dataclass(frozen=True)
class Pace:
    """A bucket: ``per_minute`` calls a minute on average, at most ``burst`` of them at once."""

    per_minute: float
    burst: int

    @property
    def interval_s(self) -> float:
        return 60.0 / self.per_minute


TIER_1 = Pace(per_minute=1, burst=1)
TIER_2 = Pace(per_minute=20, burst=3)
TIER_3 = Pace(per_minute=50, burst=5)
TIER_4 = Pace(per_minute=100, burst=10)
# chat.postMessage, "Special": about one message a second per channel, short bursts allowed.
POST_PER_CHANNEL = Pace(per_minute=60, burst=2)

PER_CHANNEL_METHODS = frozenset({"chat.postMessage"})
METHOD_PACES: Mapping[str, Pace] = {
    "chat.postMessage": POST_PER_CHANNEL,
    "chat.update": TIER_3,
    "chat.delete": TIER_3,
    "chat.postEphemeral": TIER_4,
    "chat.getPermalink": TIER_4,  # "Special", and generous: paced like Tier 4
    "views.open": TIER_4,
    "views.push": TIER_4,
    "views.update": TIER_4,
    "views.publish": TIER_4,
    "files.getUploadURLExternal": TIER_4,
    "files.completeUploadExternal": TIER_4,
    "usergroups.users.list": TIER_2,
    "users.info": TIER_4,
    "conversations.info": TIER_3,
    "conversations.members": TIER_4,
    "conversations.history": TIER_3,
    "conversations.replies": TIER_3,
    "conversations.list": TIER_2,
    "auth.test": TIER_4,  # "Special": thousands an hour
    "apps.connections.open": TIER_1,
}
DEFAULT_PACE = TIER_2  # a method not listed: Slack says most allow at least 20 a minute
_MAX_SLOWDOWN = 8.0
_RECOVERY_STEP = 0.1


def budget_key(method: str, channel: str | None = None) -> BudgetKey:
    """The bucket a call draws from: its method's, and for chat.postMessage its channel's."""
    return (method, channel or "") if method in PER_CHANNEL_METHODS else (method, "")


@dataclass
class _Bucket:
    """GCRA state: ``tat`` is when the bucket is full again; ``held_until`` a 429's end.

    A 429 means Slack's bucket is emptier than ours (another process of the app spends it too):
    the pace halves after it, and comes back a tenth at a time with each call.
    """

    pace: Pace
    tat: float = 0.0
    held_until: float = 0.0
    slowdown: float = 1.0
    # The last caller in line; the next one goes after it has its answer.
    tail: concurrent.futures.Future[None] = field(default_factory=lambda: _done())

    @property
    def interval_s(self) -> float:
        return self.pace.interval_s * self.slowdown

    def start_at(self, now: float) -> float:
        """When the head of the line may go (now or later)."""
        tau = (self.pace.burst - 1) * self.interval_s
        return max(now, self.tat - tau, self.held_until)

    def take(self, now: float) -> None:
        self.tat = max(self.tat, now) + self.interval_s
        self.slowdown = max(1.0, self.slowdown - _RECOVERY_STEP)

    def hold(self, until: float) -> None:
        self.held_until = max(self.held_until, until)
        self.slowdown = min(_MAX_SLOWDOWN, self.slowdown * 2)
        # After the wait, one call, then the pace again (no burst into a limit just hit).
        self.tat = max(self.tat, until + (self.pace.burst - 1) * self.interval_s)


def _finish(future: concurrent.futures.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _done() -> concurrent.futures.Future[None]:
    done: concurrent.futures.Future[None] = concurrent.futures.Future()
    done.set_result(None)
    return done


@dataclass
class _Turn:
    """A turn a caller took before building its call (``SlackBudget.turn``)."""

    key: BudgetKey
    used: bool = False


# The turn the current task holds, if any: its next call of that key does not queue again, and
# answers a 429 itself (the live writer sends its newest state after the wait, not the old one).
_HELD_TURN: ContextVar[_Turn | None] = ContextVar("rollbot_slack_turn", default=None)


class SlackBudget:
    """Per-bucket lines and paces; one instance per process (made in ``handlers/server.py``)."""

    def __init__(self, paces: Mapping[str, Pace] = METHOD_PACES, *,
                 default: Pace = DEFAULT_PACE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._paces = paces
        self._default = default
        self._clock = clock
        self._lock = threading.Lock()  # callers on two event loops (main and ack)
        self._buckets: dict[BudgetKey, _Bucket] = {}

    def pace_of(self, method: str) -> Pace:
        return self._paces.get(method, self._default)

    def _bucket(self, key: BudgetKey) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self.pace_of(key[0]))
        return bucket

    def hold(self, key: BudgetKey, *, seconds: float) -> None:
        """Slack answered 429 with ``Retry-After: seconds``: nobody of ``key`` goes before, and
        the calls after go slower for a while."""
        with self._lock:
            self._bucket(key).hold(self._clock() + seconds)

    def held_for(self, key: BudgetKey) -> float:
        """Seconds left of a 429's wait on ``key`` (0: none)."""
        with self._lock:
            return max(0.0, self._bucket(key).held_until - self._clock())

    def wait_s(self, key: BudgetKey) -> float:
        """About how long a call of ``key`` asking now would wait (a call in line: one more
        interval at least)."""
        with self._lock:
            bucket = self._bucket(key)
            now = self._clock()
            wait = bucket.start_at(now) - now
            if not bucket.tail.done():
                wait = max(wait, bucket.interval_s)
            return wait

    async def wait_held(self, key: BudgetKey) -> None:
        """Wait out a 429 on ``key`` (for a retry already holding its turn)."""
        left = self.held_for(key)
        while left > 0:  # a later 429 may have lengthened the wait
            await asyncio.sleep(left)
            left = self.held_for(key)

    @asynccontextmanager
    async def slot(self, key: BudgetKey) -> AsyncIterator[None]:
        """Wait in ``key``'s line and for its pace; the next caller goes when this one exits."""
        mine: concurrent.futures.Future[None] = concurrent.futures.Future()
        with self._lock:
            bucket = self._bucket(key)
            ahead, bucket.tail = bucket.tail, mine
        try:
            # Shielded: a caller cancelled while in line must not cancel the one ahead.
            await asyncio.shield(asyncio.wrap_future(ahead))
            while True:
                with self._lock:
                    now = self._clock()
                    start = bucket.start_at(now)
                    if start <= now:
                        bucket.take(now)
                        break
                await asyncio.sleep(start - now)
            yield
        finally:
            # Left the line early (cancelled): the next one still waits for the one ahead.
            ahead.add_done_callback(lambda _: _finish(mine))

    @asynccontextmanager
    async def turn(self, method: str, *, channel: str | None = None) -> AsyncIterator[None]:
        """Take ``method``'s turn first, then build the call: what changed while waiting goes in
        it. The call made inside does not queue again, and a 429 comes back to the caller."""
        key = budget_key(method, channel)
        async with self.slot(key):
            token = _HELD_TURN.set(_Turn(key))
            try:
                yield
            finally:
                _HELD_TURN.reset(token)


def claim_held_turn(key: BudgetKey) -> bool:
    """Whether the current task holds an unused turn for ``key`` (and now uses it)."""
    turn = _HELD_TURN.get()
    if turn is None or turn.key != key or turn.used:
        return False
    turn.used = True
    return True


def caller_answers_rate_limits() -> bool:
    """Whether the current call was made inside ``SlackBudget.turn``: its caller retries."""
    return _HELD_TURN.get() is not None
