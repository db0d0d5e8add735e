"""Keeps Slack messages up to date without hammering Slack, and without ever losing the end.

Each message is updated at most once a second (later changes coalesce into one update), each
call waits for its turn in the process's Slack budget (``handlers/slack_budget.py``) before the
message's newest state is read, a 429 waits its ``Retry-After``, other failures back off and
retry, and ``drain`` keeps trying until the last state is delivered or its deadline passes. An
update on its way to Slack is not delivered yet: ``drain`` waits for its answer too, so closing
the writer after it never cancels the last update mid-request. Nothing here raises into the
caller: a Slack outage never stops or fails a rollback.

A message may carry message metadata (``set(..., metadata=...)``): it goes with the post, and
with an update only until Slack has taken it, since an update that leaves ``metadata`` out keeps
the message's metadata (Slack's documented behaviour) and sending it again could fire
``message_metadata_updated`` at every subscriber for nothing. Coalesced changes keep it, a
message re-posted after it was deleted gets it again, and metadata Slack refuses is dropped so
that the message itself still gets through.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from handlers.blocks.message_events import METADATA_ERRORS
from handlers.slack_client import has_budget, turn_of, turn_wait_s

log = logging.getLogger(__name__)

_TEXT_FALLBACK_ERRORS = {"invalid_blocks", "msg_too_long", "invalid_arguments"}
_GONE_ERRORS = {"message_not_found", "cant_update_message"}
_MAX_BACKOFF_S = 30.0


@dataclass(eq=False)
class SlackMessage:
    """One message rollbot owns: posted once, then edited in place."""

    channel: str
    thread_ts: str | None = None
    ts: str | None = None
    text: str = ""
    blocks: list[dict[str, Any]] | None = None
    dirty: bool = False
    sending: bool = False  # an update is on its way to Slack, not answered yet
    last_sent: float = -1e9
    not_before: float = 0.0  # a 429's Retry-After, for this message
    text_only: bool = False
    sent_count: int = field(default=0)
    metadata: dict[str, Any] | None = None
    metadata_delivered: bool = False  # Slack holds the current metadata: updates leave it out
    metadata_refused: bool = False


class SlackWriter:
    """One task per writer sends every pending update in order, paced and retried."""

    def __init__(self, client: AsyncWebClient, *, min_interval_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._min_interval = min_interval_s
        self._clock = clock
        self._messages: list[SlackMessage] = []
        self._wake = asyncio.Event()
        self._not_before = 0.0
        self._backoff = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="rollbot-slack-writer")

    def message(self, channel: str, *, thread_ts: str | None = None,
                ts: str | None = None) -> SlackMessage:
        msg = SlackMessage(channel=channel, thread_ts=thread_ts, ts=ts)
        self._messages.append(msg)
        return msg

    def set(self, msg: SlackMessage, *, text: str, blocks: list[dict[str, Any]] | None,
            metadata: dict[str, Any] | None = None) -> None:
        """The message's next state; ``metadata`` None keeps the metadata it already has."""
        new_metadata = metadata is not None and metadata != msg.metadata
        if msg.text == text and msg.blocks == blocks and msg.ts is not None and not new_metadata:
            return
        if new_metadata:
            msg.metadata, msg.metadata_delivered, msg.metadata_refused = metadata, False, False
        msg.text, msg.blocks, msg.dirty = text, blocks, True
        self._wake.set()

    @property
    def pending(self) -> bool:
        """Whether a message does not show its last state yet (changed, or its update in flight)."""
        return any(m.dirty or m.sending for m in self._messages)

    async def drain(self, *, timeout_s: float) -> bool:
        """Wait until every message shows its last state; False if the deadline passed first."""
        deadline = self._clock() + timeout_s
        while self.pending and self._clock() < deadline:
            self._wake.set()
            await asyncio.sleep(0.05)
        delivered = not self.pending
        if not delivered:
            log.error("Slack: %d message(s) could not be brought up to date within %.0f s",
                      sum(m.dirty or m.sending for m in self._messages), timeout_s)
        return delivered

    async def close(self) -> None:
        if self.pending:  # after a drain that timed out: the log must say what Slack missed
            log.warning("Slack: closing with %d message(s) not up to date (last state lost)",
                        sum(m.dirty or m.sending for m in self._messages))
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _loop(self) -> None:
        while True:
            ready_at = self._next_ready()
            if ready_at is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            delay = ready_at - self._clock()
            if delay > 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
                except TimeoutError:
                    pass
                continue
            await self._send(self._pick())

    def _eligible(self) -> list[SlackMessage]:
        """The changed messages that may go: any update, and the first message not posted yet
        (a thread reads in order, also when a post has to wait out a 429)."""
        eligible: list[SlackMessage] = []
        post_seen = False
        for m in self._messages:
            if not m.dirty:
                continue
            if m.ts is None:
                if post_seen:
                    continue
                post_seen = True
            eligible.append(m)
        return eligible

    def _ready_at(self, msg: SlackMessage) -> float:
        return max(msg.last_sent + self._min_interval, msg.not_before)

    def _turn_wait(self, msg: SlackMessage) -> float:
        return turn_wait_s(self._client, _method(msg), channel=msg.channel)

    def _next_ready(self) -> float | None:
        """When a changed message may go: its own pace, and its method's turn in the budget (so
        that the writer never sits in one line while another message could go)."""
        eligible = self._eligible()
        if not eligible:
            return None
        now = self._clock()
        soonest = min(max(self._ready_at(m), now + self._turn_wait(m)) for m in eligible)
        return max(soonest, self._not_before)

    def _pick(self) -> SlackMessage:
        """Of the messages ready, the one whose method's budget has its turn soonest: the live
        message's update does not wait behind thread posts queueing for the channel."""
        now = self._clock()
        ready = [m for m in self._eligible() if self._ready_at(m) <= now]
        return min(ready, key=lambda m: (self._turn_wait(m), m.last_sent))

    async def _send(self, msg: SlackMessage) -> None:
        method = _method(msg)
        # The turn first (other runs may be using the method's budget), the state after: what
        # changed while waiting goes in this one call. A 429 comes back here, not retried with
        # the state it refused.
        async with turn_of(self._client, method, channel=msg.channel):
            await self._send_now(msg)

    async def _send_now(self, msg: SlackMessage) -> None:
        text, blocks, metadata = msg.text, msg.blocks, msg.metadata
        msg.dirty = False
        msg.last_sent = self._clock()
        msg.sending = True
        try:
            await self._call(msg, text, None if msg.text_only else blocks,
                             None if msg.metadata_refused else metadata)
        except SlackApiError as exc:
            self._failed(msg, exc)
            return
        except (OSError, TimeoutError, aiohttp.ClientError) as exc:
            msg.dirty = True
            self._back_off(f"network: {exc or type(exc).__name__}")
            return
        finally:
            # Set only after the answer (or the failure, which made it dirty again if it is to
            # be retried): until then ``drain`` must not report the message delivered.
            msg.sending = False
        msg.sent_count += 1
        if metadata is msg.metadata:  # not replaced by a set() while this call was on its way
            msg.metadata_delivered = True
        self._backoff = 0.0

    async def _call(self, msg: SlackMessage, text: str, blocks: list[dict[str, Any]] | None,
                    metadata: dict[str, Any] | None) -> None:
        if msg.ts is None:
            response = await self._client.chat_postMessage(
                channel=msg.channel, text=text, blocks=blocks, thread_ts=msg.thread_ts,
                metadata=metadata, unfurl_links=False, unfurl_media=False)
            msg.ts = str(response["ts"])
        elif metadata and not msg.metadata_delivered:
            await self._client.chat_update(channel=msg.channel, ts=msg.ts, text=text,
                                           blocks=blocks or [], metadata=metadata)
        else:  # metadata left out once delivered: Slack keeps it; a repeat could read as news
            await self._client.chat_update(channel=msg.channel, ts=msg.ts, text=text,
                                           blocks=blocks or [])

    def _failed(self, msg: SlackMessage, exc: SlackApiError) -> None:
        status = exc.response.status_code
        error = str(exc.response.get("error", "")) if exc.response is not None else ""
        if status == 429:
            retry_after = float(exc.response.headers.get("Retry-After", "1") or 1)
            msg.not_before = self._clock() + retry_after
            if not has_budget(self._client):  # else the budget holds that method (only)
                self._not_before = msg.not_before
            msg.dirty = True
            log.info("Slack rate limit: waiting %.0f s (Retry-After)", retry_after)
        elif error in _TEXT_FALLBACK_ERRORS and not msg.text_only:
            log.error("Slack refused the blocks (%s); sending text only", error)
            msg.text_only, msg.dirty = True, True
        elif error in METADATA_ERRORS and msg.metadata and not msg.metadata_refused:
            log.error("Slack refused the message metadata (%s); sending the message without it",
                      error)
            msg.metadata_refused, msg.dirty = True, True
        elif error in _GONE_ERRORS:
            log.warning("Slack message %s is gone (%s); posting a new one", msg.ts, error)
            msg.ts, msg.dirty, msg.metadata_delivered = None, True, False
        elif status >= 500 or error in ("ratelimited", "fatal_error", "internal_error",
                                        "service_unavailable", "request_timeout"):
            msg.dirty = True
            self._back_off(f"HTTP {status} {error}")
        else:
            log.error("Slack refused an update (%s, HTTP %s); giving up on this change",
                      error, status)

    def _back_off(self, why: str) -> None:
        self._backoff = min(_MAX_BACKOFF_S, max(1.0, self._backoff * 2))
        self._not_before = self._clock() + self._backoff
        log.warning("Slack unavailable (%s); retrying in %.0f s", why, self._backoff)


def _method(msg: SlackMessage) -> str:
    return "chat.postMessage" if msg.ts is None else "chat.update"
