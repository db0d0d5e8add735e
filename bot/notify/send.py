"""One signed POST of an event to one webhook, and what its answer means for a retry.

Signed exactly like CI's calls to the deploy hook (``bot/autorollback/contract.py``), with the
timestamp of this attempt: ``X-Rollbot-Signature: v0=HMAC-SHA256(secret, "v0:{ts}:{body}")``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx

from bot.autorollback.contract import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from bot.notify.config import Webhook

EVENT_HEADER = "X-Rollbot-Event"
EVENT_ID_HEADER = "X-Rollbot-Event-Id"
# Worth another try: the receiver is busy, rate-limits us, or timed the request out itself.
_RETRYABLE_4XX = (408, 429)


@dataclass(frozen=True)
class Answer:
    """What one attempt got: delivered, worth retrying, or refused for good; in one sentence."""

    delivered: bool
    retry: bool
    status: int | None
    said: str


async def post_signed(client: httpx.AsyncClient, webhook: Webhook, body: bytes, *,
                      event: str, event_id: str, timeout_s: float) -> Answer:
    """POST ``body`` to the webhook, signed now; never raises for what the network does."""
    ts = int(time.time())
    headers = {"Content-Type": "application/json", "User-Agent": "rollbot",
               TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: sign(webhook.secret, ts, body),
               EVENT_HEADER: event, EVENT_ID_HEADER: event_id}
    try:
        # httpx's timeout bounds each phase; this bounds the whole try (a slow trickle too).
        async with asyncio.timeout(timeout_s):
            response = await client.post(webhook.url, content=body, headers=headers,
                                         timeout=timeout_s)
    except (httpx.TimeoutException, TimeoutError):
        return Answer(False, True, None, f"{webhook.url} did not answer within {timeout_s:g} s")
    except httpx.HTTPError as exc:
        reason = str(exc) or type(exc).__name__
        return Answer(False, True, None, f"could not reach {webhook.url}: {reason}")
    return judge(webhook.url, response.status_code, response.text[:200])


def judge(url: str, status: int, text: str = "") -> Answer:
    """2xx: delivered; 408, 429 and 5xx: try again later; any other answer: refused for good."""
    said = f"{url} answered {status}" + (f": {' '.join(text.split())}" if text.strip() else "")
    if 200 <= status < 300:
        return Answer(True, False, status, said)
    if status >= 500 or status in _RETRYABLE_4XX:
        return Answer(False, True, status, said)
    return Answer(False, False, status, said + " (a refusal that another try would not change)")
