"""The Slack front's metrics: Web API calls counted, acks timed, ``GET /metrics`` served.

Three small pieces ``handlers/server.py`` composes; what they count lives in
``bot/telemetry/metrics.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.telemetry.metrics import CONTENT_TYPE, Metrics

METRICS_PATH = "/metrics"


class MeteredWebClient(AsyncWebClient):
    """An ``AsyncWebClient`` that tells ``on_call`` of every Web API call and how it ended.

    Every generated method (``chat_postMessage``…) goes through ``api_call``, so overriding it
    counts them all, Bolt's included (Bolt is given this client).
    """

    def __init__(self, *, on_call: Callable[[str, str | None], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._on_call = on_call

    async def api_call(self, api_method: str, **kwargs: Any) -> AsyncSlackResponse:
        try:
            response = await super().api_call(api_method, **kwargs)
        except SlackApiError as exc:
            self._on_call(api_method, slack_error_name(exc))
            raise
        except (SlackClientError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._on_call(api_method, type(exc).__name__)  # e.g. ClientConnectorError
            raise
        self._on_call(api_method, None)
        return response


def slack_error_name(exc: SlackApiError) -> str:
    """Slack's own error name (``ratelimited``, ``channel_not_found``), else ``http_<status>``."""
    response = exc.response
    error = response.get("error") if hasattr(response, "get") else None
    if error:
        return str(error)
    return f"http_{getattr(response, 'status_code', 'unknown')}"


def ack_timer(metrics: Metrics, *, path: str) -> Middleware:
    """An aiohttp middleware timing ``path`` from the request's arrival to its answer.

    Put it first in the middleware list, so the time includes every other middleware (the
    replay guard's database work among them).
    """
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path != path:
            return await handler(request)
        started = time.perf_counter()
        try:
            return await handler(request)
        finally:
            metrics.acked(time.perf_counter() - started)
    return middleware


def metrics_route(metrics: Metrics) -> web.RouteDef:
    """``GET /metrics``: Prometheus's text format."""
    async def scrape(_request: web.Request) -> web.Response:
        body = await metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
    return web.get(METRICS_PATH, scrape)
