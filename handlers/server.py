"""HTTP server and composition of the Slack front: `rollbot serve`.

``POST /slack/events`` takes slash commands, interactivity and events (Bolt verifies Slack's
signature); before Bolt, a guard refuses replays of a request already seen and puts forged or
stale requests in the audit log. ``GET /healthz`` answers 200 while the database is reachable.
Without a ``[slack]`` table, ``rollbot serve`` serves only ``/healthz``, ``/metrics`` and CI's
deploy hooks, and the automatic rollback reports to the log.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_sdk.signature import SignatureVerifier

from bot.app import App, open_app
from bot.autorollback.machine import AutoRollback
from bot.config import Runbook, Settings
from bot.errors import ConfigError
from bot.redaction import install_log_redaction
from bot.service import Rollbot
from bot.telemetry.metrics import Metrics
from handlers.access import Access
from handlers.app import build_app
from handlers.autorollback import SlackAutoRollback
from handlers.front import SlackFront
from handlers.front.interrupted import SlackInterruptions
from handlers.hooks import DeployHooks
from handlers.metering import MeteredWebClient, ack_timer, metrics_route
from handlers.shutdown import Draining, StopSignals, stop_gracefully

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
_MAX_AGE_S = 300  # Slack's own rule: refuse requests whose timestamp is over 5 minutes old


_UNIX_SECONDS = re.compile(r"[0-9]{1,12}")  # ASCII only: str.isdigit() also takes "١٢٣"
_SLACK_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")


def signature_problem(verifier: SignatureVerifier, *, body: bytes, timestamp: str,
                      signature: str, now: float) -> str | None:
    """Why a request is not signed by Slack, or None when it is; never raises.

    slack_sdk's ``is_valid`` raises on a non-numeric timestamp (``int()``) and on a non-ASCII
    signature (``hmac.compare_digest``): checked here first, so such a request is a 401.
    """
    missing = [name for name, value in (("X-Slack-Request-Timestamp", timestamp),
                                        ("X-Slack-Signature", signature)) if not value]
    if missing:
        return f"no {' and no '.join(missing)} header (not signed by Slack)"
    if _UNIX_SECONDS.fullmatch(timestamp) is None:
        return f"timestamp {timestamp[:20]!a} is not a Unix time in seconds"
    if abs(now - int(timestamp)) > _MAX_AGE_S:
        return (f"timestamp {timestamp} is more than {_MAX_AGE_S // 60} minutes away from now "
                "(a replay, or a wrong clock)")
    if _SLACK_SIGNATURE.fullmatch(signature) is None:
        return f"signature {signature[:12]!a}… is not 'v0=' and 64 hex digits"
    if not verifier.is_valid(body=body, timestamp=timestamp, signature=signature):
        return "signature does not match the body (another signing secret, or a changed body)"
    return None


class ReplayGuard:
    """Remembers the signatures of recent valid requests; the same one twice is a replay."""

    def __init__(self, signing_secret: str, *,
                 audit: Callable[[str], Coroutine[Any, Any, None]]) -> None:
        self._verifier = SignatureVerifier(signing_secret)
        self._seen: set[str] = set()
        self._order: deque[tuple[float, str]] = deque()
        self._audit = audit
        self._background: set[asyncio.Task[None]] = set()

    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
        if request.path != EVENTS_PATH or request.method != "POST":
            return await handler(request)
        body = await request.read()
        stamp = request.headers.get("X-Slack-Request-Timestamp", "")
        signature = request.headers.get("X-Slack-Signature", "")
        problem = signature_problem(self._verifier, body=body, timestamp=stamp,
                                    signature=signature, now=time.time())
        if problem is not None:
            self._record(f"refused a Slack request with a bad signature: {problem}")
            return web.json_response({"error": "invalid request"}, status=401)
        now = time.monotonic()
        while self._order and now - self._order[0][0] > 2 * _MAX_AGE_S:  # O(1) per request
            self._seen.discard(self._order.popleft()[1])
        if signature in self._seen:
            if request.headers.get("X-Slack-Retry-Num"):
                # Slack re-delivering what we already took: answer so it stops, run nothing.
                return web.Response(status=200)
            self._record("refused a replayed Slack request (same signature as an earlier one)")
            return web.json_response({"error": "replayed request"}, status=401)
        self._seen.add(signature)
        self._order.append((now, signature))
        return await handler(request)

    def _record(self, detail: str) -> None:
        log.warning("%s", detail)
        task = asyncio.create_task(self._audit(detail))  # after the answer, never before it
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def web_app(*, rollbot: Rollbot, bolt: AsyncApp | None = None, guard: ReplayGuard | None = None,
            hooks: DeployHooks | None = None, metrics: Metrics | None = None
            ) -> web.Application:
    """The routes: Slack's (when ``bolt``), ``/healthz``, CI's hooks (when ``hooks``) and
    ``/metrics`` (when ``metrics``)."""
    async def healthz(_request: web.Request) -> web.Response:
        if await rollbot.ping():
            return web.json_response({"ok": True})
        return web.json_response({"ok": False, "error": "database unreachable"}, status=503)

    middlewares: list[Middleware] = [guard.middleware] if guard is not None else []
    if metrics is not None:  # first: the ack time includes the other middlewares
        middlewares.insert(0, ack_timer(metrics, path=EVENTS_PATH))
    app = web.Application(middlewares=middlewares)
    app.add_routes([web.get("/healthz", healthz)])
    if metrics is not None:
        app.add_routes([metrics_route(metrics)])
    if bolt is not None:
        slack = bolt

        async def events(request: web.Request) -> web.Response:
            return await to_aiohttp_response(await slack.async_dispatch(
                await to_bolt_request(request)))
        app.add_routes([web.post(EVENTS_PATH, events)])
    if hooks is not None:
        app.add_routes(hooks.routes())
    return app


async def _listen(stack: AsyncExitStack, app: web.Application, *, host: str, port: int,
                  drain: Draining) -> int:
    """Serve ``app`` until ``stack`` closes; the port it listens on (``port`` 0: a free one)."""
    drain.serve(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    site = web.TCPSite(runner, host, port)
    await site.start()
    drain.closes(site)
    return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]


@dataclass
class SlackService:
    """A running Slack front: the engine app, the Bolt app and the HTTP site."""

    app: App
    front: SlackFront
    bolt: AsyncApp
    port: int
    auto: AutoRollback
    drain: Draining


def _require(settings: Settings, runbook: Runbook) -> tuple[str, str]:
    if runbook.slack is None:
        raise ConfigError(f"{settings.rollbot_config}: key 'slack' is missing (the [slack] table "
                          "with incidents_channel and allowed_users)")
    if not settings.slack_bot_token or not settings.slack_signing_secret:
        raise ConfigError("SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET must be set to serve Slack")
    return settings.slack_bot_token, settings.slack_signing_secret


@asynccontextmanager
async def running(settings: Settings, runbook: Runbook, *, host: str = "127.0.0.1",
                  min_update_interval_s: float = 1.0) -> AsyncIterator[SlackService]:
    """Start everything; on exit, let running rollbacks finish and close what was opened."""
    token, secret = _require(settings, runbook)
    assert runbook.slack is not None
    install_log_redaction()  # also when embedded without `rollbot serve` (the demo, tests)
    async with AsyncExitStack() as stack:
        app = await stack.enter_async_context(open_app(settings, runbook))
        client = MeteredWebClient(token=token, base_url=settings.slack_api_url, timeout=10,
                                  on_call=app.metrics.slack_call)

        async def members_of(group: str) -> list[str]:
            response = await client.usergroups_users_list(usergroup=group)
            users: list[Any] = response.get("users", [])
            return [str(u) for u in users]

        async def name_of(channel: str) -> str | None:
            response = await client.conversations_info(channel=channel)
            info: dict[str, Any] = response.get("channel") or {}
            return str(info["name"]) if "name" in info else None

        access = Access(runbook.slack, members_of=members_of, name_of=name_of)
        front = SlackFront(rollbot=app.rollbot, client=client, config=runbook.slack,
                           access=access, approvals=app.approvals, follow_up=app.follow_up,
                           recoveries=app.recoveries,
                           min_update_interval_s=min_update_interval_s)
        stack.push_async_callback(front.wait_idle, 3600.0)
        app.verifier.announce_with(front.announce_verification)
        await app.verifier.start()
        stack.push_async_callback(app.verifier.stop)
        slack_auto = SlackAutoRollback(auto=app.auto, front=front, client=client,
                                       config=runbook.slack,
                                       min_update_interval_s=min_update_interval_s)
        app.auto.notify_with(slack_auto)
        app.reaper.notify_with(SlackInterruptions(client=client, approvals=app.approvals))
        await app.reaper.start()
        stack.push_async_callback(app.reaper.stop)
        stack.push_async_callback(app.auto.wait_idle, 3600.0)
        stack.push_async_callback(app.auto.hand_over)  # first: the watches go to other replicas
        await app.auto.resume_after_restart()
        hooks = DeployHooks(secret=settings.rollbot_webhook_secret, auto=app.auto)
        bolt = build_app(front=front, client=client, signing_secret=secret, auto=slack_auto)

        async def audit(detail: str) -> None:
            await app.rollbot.audit(environment=runbook.default_environment, actor="slack",
                                    kind="refusal", detail=detail)

        guard = ReplayGuard(secret, audit=audit)
        drain = Draining()
        port = await _listen(stack, web_app(bolt=bolt, rollbot=app.rollbot, guard=guard,
                                            hooks=hooks, metrics=app.metrics),
                             host=host, port=settings.port, drain=drain)
        if settings.slack_app_token:
            from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

            socket_mode = AsyncSocketModeHandler(bolt, settings.slack_app_token)
            stack.push_async_callback(socket_mode.close_async)  # also when connecting fails
            # apps.connections.open once, outside slack_sdk's connect(), which retries a refused
            # token forever: a wrong SLACK_APP_TOKEN stops start-up with Slack's error instead.
            socket_mode.client.wss_uri = await socket_mode.client.issue_new_wss_url()
            await socket_mode.connect_async()  # type: ignore[no-untyped-call]
            log.info("Socket Mode connected; HTTP serves /healthz on port %s", port)
        log.info("rollbot serves Slack on port %s (%s)", port, EVENTS_PATH)
        yield SlackService(app=app, front=front, bolt=bolt, port=port, auto=app.auto,
                           drain=drain)


@dataclass
class HooksService:
    """``rollbot serve`` without Slack: the engine app and the HTTP site of the hooks."""

    app: App
    port: int
    auto: AutoRollback
    drain: Draining


@asynccontextmanager
async def running_without_slack(settings: Settings, runbook: Runbook, *,
                                host: str = "127.0.0.1") -> AsyncIterator[HooksService]:
    """``/healthz`` and CI's deploy hooks; the automatic rollback tells the log, not Slack."""
    install_log_redaction()
    if settings.slack_bot_token or settings.slack_signing_secret:
        log.warning("%s has no [slack] table: Slack is not served (the Slack tokens are unused)",
                    settings.rollbot_config)
    async with AsyncExitStack() as stack:
        app = await stack.enter_async_context(open_app(settings, runbook))
        await app.verifier.start()  # rollbacks are still verified, and their reports rewritten
        stack.push_async_callback(app.verifier.stop)
        stack.push_async_callback(app.auto.wait_idle, 3600.0)
        stack.push_async_callback(app.auto.hand_over)  # first: the watches go to other replicas
        await app.auto.resume_after_restart()
        await app.reaper.start()  # runs whose process died: marked, and told in this log
        stack.push_async_callback(app.reaper.stop)
        hooks = DeployHooks(secret=settings.rollbot_webhook_secret, auto=app.auto)
        if not settings.rollbot_webhook_secret:
            log.warning("ROLLBOT_WEBHOOK_SECRET is not set: the deploy hooks answer 503")
        drain = Draining()
        port = await _listen(stack, web_app(rollbot=app.rollbot, hooks=hooks,
                                            metrics=app.metrics), host=host, port=settings.port,
                             drain=drain)
        log.warning("rollbot serves /healthz and the deploy hooks on port %s without Slack; "
                    "automatic rollbacks are reported in this log", port)
        yield HooksService(app=app, port=port, auto=app.auto, drain=drain)


async def serve(settings: Settings, runbook: Runbook, *, host: str) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully (handlers/shutdown.py)."""
    signals = StopSignals()
    stack = AsyncExitStack()
    service: SlackService | HooksService
    try:
        if runbook.slack is None:
            service = await stack.enter_async_context(
                running_without_slack(settings, runbook, host=host))
            print(f"rollbot serving the deploy hooks without Slack on http://{host}:"
                  f"{service.port}/hooks/deploy (no [slack] table in {settings.rollbot_config})",
                  flush=True)
        else:
            service = await stack.enter_async_context(running(settings, runbook, host=host))
            print(f"rollbot serving Slack on http://{host}:{service.port}{EVENTS_PATH}",
                  flush=True)
    except BaseException:
        await stack.aclose()
        raise
    await signals.first.wait()
    print("rollbot: stopping; running rollbacks stop after their current step", flush=True)
    await stop_gracefully(app=service.app, drain=service.drain, close=stack.aclose,
                          signals=signals)
