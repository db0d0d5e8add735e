"""rollbot's Slack Web API client: every call paced by the one budget, 429s honoured, no unfurls.

``BudgetedWebClient`` waits for its turn in ``SlackBudget`` before each call (Bolt's calls too:
``BudgetedApp`` hands Bolt's listeners a copy sharing the budget), retries a 429 through slack_sdk's
``AsyncRateLimitErrorRetryHandler`` after ``Retry-After`` (the whole method waits, not only that
call), and posts every ``chat.postMessage`` with ``unfurl_links``/``unfurl_media`` false unless
the caller said otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from handlers.metering import MeteredWebClient
from handlers.slack_budget import (
    BudgetKey,
    SlackBudget,
    budget_key,
    caller_answers_rate_limits,
    claim_held_turn,
)

log = logging.getLogger(__name__)

# Link and media previews would crowd the incident channel with Slack's cards of runbook URLs.
NO_UNFURLS = {"unfurl_links": False, "unfurl_media": False}
RATE_LIMIT_RETRIES = 2

# The bucket of the call in progress, for the retry handler (slack_sdk gives it only the URL).
_CALL: ContextVar[BudgetKey | None] = ContextVar("rollbot_slack_call", default=None)


def retry_after_s(headers: Any) -> float:
    """Slack's ``Retry-After`` in seconds (1 when missing or unreadable)."""
    value = None
    for name in headers.keys() if headers is not None else ():
        if str(name).lower() == "retry-after":  # HTTP/2 sends it lower-case
            value = headers[name]
    if isinstance(value, list):  # slack_sdk's retry response keeps header values in lists
        value = value[0] if value else None
    try:
        return max(1.0, float(value)) if value is not None else 1.0
    except ValueError:
        return 1.0


class BudgetRetryHandler(AsyncRateLimitErrorRetryHandler):
    """slack_sdk's 429 retry, through the budget: the method's whole line waits ``Retry-After``.

    Not for a call made inside ``SlackBudget.turn``: its caller (the live writer) retries with its
    newest state. Outside a Web API call (a file's bytes to the upload URL), slack_sdk's own wait.
    """

    def __init__(self, budget: SlackBudget, *, on_call: Callable[[str, str | None], None],
                 max_retry_count: int = RATE_LIMIT_RETRIES) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self._budget = budget
        self._on_call = on_call  # the refused attempt is a call too, for the metrics

    async def _can_retry_async(self, *, state: RetryState, request: HttpRequest,
                               response: HttpResponse | None = None,
                               error: Exception | None = None) -> bool:
        if caller_answers_rate_limits():
            return False
        return await super()._can_retry_async(state=state, request=request, response=response,
                                              error=error)

    async def prepare_for_next_attempt_async(self, *, state: RetryState, request: HttpRequest,
                                             response: HttpResponse | None = None,
                                             error: Exception | None = None) -> None:
        key = _CALL.get()
        if key is None or response is None:
            await super().prepare_for_next_attempt_async(state=state, request=request,
                                                         response=response, error=error)
            return
        wait = retry_after_s(response.headers)
        log.info("Slack rate limit on %s: every %s call waits %.0f s (Retry-After)",
                 key[0], key[0], wait)
        self._on_call(key[0], "ratelimited")
        self._budget.hold(key, seconds=wait)
        state.next_attempt_requested = True
        await self._budget.wait_held(key)  # this call keeps its place: first after the wait
        state.increment_current_attempt()


def budget_retry_handlers(budget: SlackBudget, *, on_call: Callable[[str, str | None], None]
                          ) -> list[AsyncRetryHandler]:
    """slack_sdk's default (a dropped connection, once) and the budget's 429 retry."""
    return [AsyncConnectionErrorRetryHandler(), BudgetRetryHandler(budget, on_call=on_call)]


class BudgetedWebClient(MeteredWebClient):
    """A ``MeteredWebClient`` whose every call waits for its turn in ``budget``."""

    def __init__(self, *, budget: SlackBudget, on_call: Callable[[str, str | None], None],
                 **kwargs: Any) -> None:
        kwargs.setdefault("retry_handlers", budget_retry_handlers(budget, on_call=on_call))
        super().__init__(on_call=on_call, **kwargs)
        self.budget = budget

    def for_request(self, *, team_id: str | None) -> BudgetedWebClient:
        """A copy for one Bolt request (Bolt's rule: no client shared across requests), same
        budget, same metering."""
        return BudgetedWebClient(
            budget=self.budget, on_call=self._on_call, token=self.token,
            base_url=self.base_url, timeout=self.timeout, ssl=self.ssl, proxy=self.proxy,
            session=self.session, trust_env_in_session=self.trust_env_in_session,
            headers=self.headers, team_id=team_id, logger=self._logger,
            retry_handlers=list(self.retry_handlers))

    async def api_call(self, api_method: str, **kwargs: Any) -> AsyncSlackResponse:
        if api_method == "chat.postMessage":
            _no_unfurls(kwargs)
        key = budget_key(api_method, _channel_of(kwargs))
        token = _CALL.set(key)
        try:
            if claim_held_turn(key):  # the caller already waited its turn (the live writer)
                return await self._paced_call(key, api_method, **kwargs)
            async with self.budget.slot(key):
                return await self._paced_call(key, api_method, **kwargs)
        finally:
            _CALL.reset(token)

    async def _paced_call(self, key: BudgetKey, api_method: str,
                          **kwargs: Any) -> AsyncSlackResponse:
        try:
            return await super().api_call(api_method, **kwargs)
        except SlackApiError as exc:
            if exc.response is not None and exc.response.status_code == 429:
                # Retries used up, or the caller retries itself: still nobody goes too early.
                self.budget.hold(key, seconds=retry_after_s(exc.response.headers))
            raise


def _no_unfurls(kwargs: dict[str, Any]) -> None:
    """Unfurls off in whichever part carries the arguments, keeping values already given."""
    parts = [kwargs[p] for p in ("json", "data", "params") if kwargs.get(p) is not None]
    if not parts:
        kwargs["json"] = dict(NO_UNFURLS)
    for args in parts[:1]:
        if isinstance(args, dict):  # a multipart form (files) is left as it is
            for name, value in NO_UNFURLS.items():
                args.setdefault(name, value)


def _channel_of(kwargs: dict[str, Any]) -> str | None:
    for part in ("json", "data", "params"):
        args = kwargs.get(part)
        if isinstance(args, dict) and args.get("channel"):
            return str(args["channel"])
    return None


def has_budget(client: AsyncWebClient) -> bool:
    return isinstance(client, BudgetedWebClient)


def turn_wait_s(client: AsyncWebClient, method: str, *, channel: str | None = None) -> float:
    """About how long a call of ``method`` would wait for its turn now (no budget: 0)."""
    if not isinstance(client, BudgetedWebClient):
        return 0.0
    return client.budget.wait_s(budget_key(method, channel))


@asynccontextmanager
async def turn_of(client: AsyncWebClient, method: str, *,
                  channel: str | None = None) -> AsyncIterator[None]:
    """``method``'s turn in ``client``'s budget, taken before building the call (no budget: at
    once)."""
    if not isinstance(client, BudgetedWebClient):
        yield
        return
    async with client.budget.turn(method, channel=channel):
        yield


class BudgetedApp(AsyncApp):
    """Bolt's app, whose listeners' ``client`` (and Bolt's own ``auth.test``) draw from rollbot's
    budget: Bolt otherwise makes a plain client per request, which nothing would pace."""

    def _init_context(self, req: AsyncBoltRequest) -> None:
        super()._init_context(req)
        shared = self._async_client
        if isinstance(shared, BudgetedWebClient):
            req.context["client"] = shared.for_request(team_id=req.context.team_id)
