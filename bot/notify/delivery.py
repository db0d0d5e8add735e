"""The delivery loop: claims due outbox rows, POSTs them signed, retries with backoff.

``rollbot serve`` runs it for as long as it serves; a CLI run runs it too and, before it exits,
delivers what is due (``drain``), leaving retries for ``serve``. Each webhook has a lane of its
own, which sends its events one at a time, oldest first, so a receiver that hangs holds up only
itself. Each row is claimed under a lease (``outbox.py``) so that, however many replicas run the
loop, one sends it. A try that fails (no answer in ``timeout_s``, a network error, 408, 429 or
5xx) is due again after the next delay of the schedule; another 4xx, or the last try failing,
gives up: a WARNING and an audit entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

import httpx

from bot.autorollback.leases import holder_id
from bot.notify.config import EventName, Webhook
from bot.notify.notices import Notice, body
from bot.notify.outbox import Delivery, Outbox
from bot.notify.send import Answer, post_signed

log = logging.getLogger(__name__)

LINK_GRACE_S = 2.0  # how long rollback.started waits for Slack's link to its live message
KEEP_DAYS = 30.0  # how long the outbox keeps an event once it was delivered or given up
Audit = Callable[..., Awaitable[object]]
LiveUrl = Callable[[int], Awaitable[str | None]]


class DeliveryLoop:
    """Sends what the outbox holds to the configured webhooks; owns no connection."""

    def __init__(self, *, outbox: Outbox, client: httpx.AsyncClient,
                 webhooks: Sequence[Webhook], retry_delays_s: Sequence[float],
                 timeout_s: float, poll_s: float, audit: Audit, live_url: LiveUrl) -> None:
        self._outbox = outbox
        self._client = client
        self._webhooks = {w.url: w for w in webhooks}
        self._delays = tuple(retry_delays_s)
        self._timeout_s = timeout_s
        self._poll_s = poll_s
        self._audit = audit
        self._live_url = live_url
        self.holder = holder_id()
        # Longer than a try can take, so a live holder's claim never expires under it.
        self._lease_s = timeout_s + 30.0
        self._wake = {url: asyncio.Event() for url in self._webhooks}
        self._tasks: list[asyncio.Task[None]] = []
        self._busy: set[str] = set()  # the webhooks whose lane is trying an event now

    @property
    def urls(self) -> list[str]:
        return list(self._webhooks)

    @property
    def webhooks(self) -> tuple[Webhook, ...]:
        return tuple(self._webhooks.values())

    async def send_now(self, notice: Notice, webhook: Webhook) -> Answer:
        """One signed try, outside the outbox and its retries (``rollbot notify test``)."""
        data = body(notice.payload(), sent_at=datetime.now(UTC))
        return await post_signed(self._client, webhook, data, event=notice.event,
                                 event_id=notice.id, timeout_s=self._timeout_s)

    def poke(self) -> None:
        """An event was just written here: look at the outbox now, not at the next poll."""
        for wake in self._wake.values():
            wake.set()

    def start(self) -> None:
        """One lane per webhook: a receiver that hangs holds up only its own events."""
        if not self._tasks and self._webhooks:
            self._tasks = [asyncio.create_task(self._lane(url), name=f"rollbot-notify {url}")
                           for url in self._webhooks]
            self._tasks.append(asyncio.create_task(self._prune(), name="rollbot-notify-prune"))

    async def stop(self) -> None:
        """Stop sending; what this process claimed and did not finish is handed back."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            # By holder, not by id: a claim cut off mid-answer is handed back too.
            await self._outbox.release_held(holder=self.holder)
        except Exception as exc:  # their leases expire by themselves
            log.warning("could not hand back the events being sent: %s", exc)

    async def drain(self, budget_s: float) -> None:
        """Let the lanes deliver what is due, for at most ``budget_s``; then stop (a CLI run,
        before it exits: what is left, retries included, is ``rollbot serve``'s)."""
        if not self._webhooks:
            return
        self.start()
        self.poke()
        end = time.monotonic() + budget_s
        try:
            while self._busy or await self._outbox.due_count(self.urls, holder=self.holder):
                if time.monotonic() > end:
                    log.warning("some events were not delivered before rollbot exited; "
                                "`rollbot serve` delivers them")
                    break
                await asyncio.sleep(0.05)
        finally:
            await self.stop()

    async def _prune(self) -> None:
        """Now and then, forget what was delivered long ago (the audit log keeps give-ups)."""
        while True:
            try:
                if pruned := await self._outbox.prune(keep_days=KEEP_DAYS):
                    log.info("forgot %d events delivered or given up over %g days ago", pruned,
                             KEEP_DAYS)
            except Exception as exc:
                log.warning("could not prune the event outbox: %s", exc)
            await asyncio.sleep(3600)

    async def _lane(self, url: str) -> None:
        wake = self._wake[url]
        while True:
            wake.clear()
            try:
                sent = await self.deliver_due(url)
            except Exception as exc:  # the database is away: the next poll tries again
                log.warning("could not read the event outbox: %s", exc)
                sent = 0
            if sent:
                continue  # there may be more due
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_s):
                    await wake.wait()

    async def deliver_due(self, url: str) -> int:
        """Claim the oldest event due for ``url`` and try it (events go out in order, one at
        a time per webhook); how many were tried, 0 or 1."""
        self._busy.add(url)
        try:
            rows = await self._outbox.claim(holder=self.holder, urls=[url],
                                            lease_s=self._lease_s, limit=1)
            for row in rows:
                await self._try(row)
            return len(rows)
        finally:
            self._busy.discard(url)

    async def _try(self, row: Delivery) -> None:
        try:
            webhook = self._webhooks[row.url]
            live = await self._live_link(row)
            data = body(row.payload, sent_at=datetime.now(UTC), live_message_url=live)
            answer = await post_signed(self._client, webhook, data, event=row.event,
                                       event_id=row.event_id, timeout_s=self._timeout_s)
            await self._record(row, answer)
        except Exception:
            log.exception("delivering event %s (%s) to %s failed inside rollbot", row.event_id,
                          row.event, row.url)

    async def _live_link(self, row: Delivery) -> str | None:
        """The run's live message link, when it was recorded after the event was written.

        Slack records it a moment after the run began: ``rollback.started`` waits up to
        ``LINK_GRACE_S`` after the event for it (a CLI run, which has none, only that long).
        """
        run = row.payload.get("run")
        if row.run_id is None or not isinstance(run, dict) or run.get("live_message_url"):
            return None
        occurred = datetime.fromisoformat(str(row.payload["occurred_at"]).replace("Z", "+00:00"))
        wait_until = occurred + timedelta(seconds=LINK_GRACE_S if row.event
                                          == EventName.ROLLBACK_STARTED else 0)
        while True:
            live = None
            with contextlib.suppress(Exception):  # the link is a nicety, not a reason to fail
                live = await self._live_url(row.run_id)
            if live or datetime.now(UTC) >= wait_until:
                return live
            await asyncio.sleep(0.2)

    async def _record(self, row: Delivery, answer: Answer) -> None:
        tries = row.attempts + 1
        if answer.delivered:
            await self._outbox.delivered(row.id, holder=self.holder, status=answer.status or 0)
            log.info("event %s (%s) delivered to %s on try %d", row.event_id, row.event,
                     row.url, tries)
            return
        if answer.retry and tries <= len(self._delays):
            delay = self._delays[tries - 1]
            await self._outbox.retry_later(row.id, holder=self.holder, after_s=delay,
                                           status=answer.status, error=answer.said)
            log.info("event %s (%s): try %d failed (%s); trying again in %g s", row.event_id,
                     row.event, tries, answer.said, delay)
            return
        if not await self._outbox.gave_up(row.id, holder=self.holder, status=answer.status,
                                          error=answer.said):
            return  # another replica took it over meanwhile (our lease ran out)
        why = (f"after {tries} tries" if answer.retry
               else f"on try {tries}, refused")
        detail = (f"gave up sending event {row.event} ({row.event_id}) to {row.url} {why}: "
                  f"{answer.said}")
        log.warning("%s", detail)
        try:
            await self._audit(environment=row.environment, actor="rollbot:notify",
                              kind="notify", run_id=row.run_id, detail=detail)
        except Exception as exc:
            log.error("AUDIT WRITE FAILED (%s): %s", detail, exc)
