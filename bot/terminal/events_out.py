"""The terminal's part in signed events out: ``rollbot notify test``, and delivery around a run.

A CLI run starts the delivery loop and, before it exits, delivers what is due; an event whose
receiver failed is left in the outbox, for ``rollbot serve`` to retry.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from rich.console import Console
from rich.markup import escape

from bot.app import App
from bot.errors import InvalidInput
from bot.notify.notices import test_notice

EXIT_OK, EXIT_FAILED = 0, 1
# The longest a CLI run waits, after it ended, for its events to be delivered.
DRAIN_S = 15.0


@contextlib.asynccontextmanager
async def delivering(app: App) -> AsyncIterator[None]:
    """Send events while the body runs; then deliver what is due, for a bounded time."""
    app.notify.start()
    try:
        yield
    finally:
        await app.event_recorder.settle()
        await app.notify.stop()
        # One try of each event due; a receiver that hangs is left for `rollbot serve`.
        await app.notify.drain(min(app.runbook.notify.timeout_s * 2 + 5, DRAIN_S))


async def notify_test(app: App, *, url: str | None, by: str, console: Console) -> int:
    """Send a signed ``test`` event to every webhook (or the one at ``url``); print answers."""
    env = app.runbook.default_environment
    webhooks = app.notify.webhooks
    if url is not None:
        webhooks = tuple(w for w in webhooks if w.url == url)
    if not webhooks:
        configured = ", ".join(w.url for w in app.notify.webhooks)
        why = (f"No [[notify.webhooks]] entry has the url {url[:200]}; configured: "
               f"{configured}. Nothing was sent." if url is not None and configured else
               "The runbook has no [[notify.webhooks]] entry, so there is nothing to test. "
               "Nothing was sent.")
        await app.rollbot.audit(environment=env, actor=by, kind="refusal",
                                detail=f"notify test: {why}")
        raise InvalidInput(why)
    failed = 0
    for webhook in webhooks:
        notice = test_notice(env, by=by)
        answer = await app.notify.send_now(notice, webhook)
        mark = "[green]✓[/]" if answer.delivered else "[bold red]✗[/]"
        verdict = "delivered" if answer.delivered else "NOT delivered"
        console.print(f"{mark} {escape(verdict)}: {escape(answer.said)}", soft_wrap=True)
        failed += not answer.delivered
        await app.rollbot.audit(environment=env, actor=by, kind="notify",
                                detail=f"notify test event {notice.id} {verdict}: {answer.said}")
    if failed:
        console.print(f"{failed} of {len(webhooks)} webhook(s) did not take the test event; "
                      "real events to them would be retried, then given up.", soft_wrap=True)
        return EXIT_FAILED
    return EXIT_OK
