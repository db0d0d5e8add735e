"""HTTP server and composition of the Slack front: `rollbot serve`.

``POST /slack/events`` takes slash commands, interactivity and events (Bolt verifies Slack's
signature); before Bolt, a guard refuses replays of a request already seen by any replica and puts
forged or stale requests in the audit log (``handlers/replay_guard.py``). ``GET /healthz`` answers
200 while the database is reachable (cached about 1 s). The HTTP server, the guard and Bolt's acks
run on an event loop of their own (``handlers/ack_loop.py``); the work after each ack runs on the
main loop, where the engine lives. In Socket Mode (``SLACK_APP_TOKEN``) Slack's requests come over
the WebSocket and ``/slack/events`` is not served. Without a ``[slack]`` table, ``rollbot serve``
serves only ``/healthz``, ``/metrics`` and CI's deploy hooks, and the automatic rollback reports
to the log. SIGTERM stops it gracefully (``handlers/shutdown.py``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp

from bot.app import App, open_app
from bot.autorollback.machine import AutoRollback
from bot.config import Runbook, Settings
from bot.errors import ConfigError
from bot.redaction import install_log_redaction
from bot.service import Rollbot
from bot.telemetry.metrics import Metrics
from handlers.access import Access
from handlers.ack_loop import AckLoop, WorkHandoff
from handlers.app import build_app
from handlers.autorollback import SlackAutoRollback
from handlers.front import SlackFront
from handlers.front.interrupted import SlackInterruptions
from handlers.health import CachedHealth
from handlers.hooks import DeployHooks
from handlers.metering import ack_timer, metrics_route
from handlers.refusals import RefusalAudit
from handlers.replay_guard import EVENTS_PATH, ReplayGuard, signature_problem
from handlers.shutdown import Draining, StopSignals, stop_gracefully
from handlers.slack_budget import SlackBudget
from handlers.slack_client import BudgetedWebClient

log = logging.getLogger(__name__)

__all__ = ["EVENTS_PATH", "ReplayGuard", "running", "running_without_slack", "serve",
           "signature_problem", "web_app"]


def web_app(*, rollbot: Rollbot, main: WorkHandoff, bolt: AsyncApp | None = None,
            guard: ReplayGuard | None = None, hooks: DeployHooks | None = None,
            engine_routes: Sequence[web.RouteDef] = (), metrics: Metrics | None = None,
            health_ttl_s: float = 1.0) -> web.Application:
    """The routes: Slack's (when ``bolt``), ``/healthz``, CI's hooks (when ``hooks``) and
    ``/metrics`` (when ``metrics``).

    Served on the ack loop: what needs the engine (the health probe, the hooks, and any of
    ``engine_routes``) runs on the main loop through ``main``, because the store's pool and the
    engine's locks belong to that loop.
    """
    health = CachedHealth(lambda: main.call(rollbot.ping()), ttl_s=health_ttl_s)

    async def healthz(_request: web.Request) -> web.Response:
        if await health.healthy():
            return web.json_response({"ok": True})
        return web.json_response({"ok": False, "error": "database unreachable"}, status=503)

    middlewares: list[Middleware] = [guard.middleware] if guard is not None else []
    if metrics is not None:  # first: the ack time includes the other middlewares
        middlewares.insert(0, ack_timer(metrics, path=EVENTS_PATH))
        engine_routes = [*engine_routes, metrics_route(metrics)]  # it reads the database
    app = web.Application(middlewares=middlewares)
    app.add_routes([web.get("/healthz", healthz)])
    if bolt is not None:
        slack = bolt

        async def events(request: web.Request) -> web.Response:
            return await to_aiohttp_response(await slack.async_dispatch(
                await to_bolt_request(request)))
        app.add_routes([web.post(EVENTS_PATH, events)])
    on_main = [*(hooks.routes() if hooks is not None else []), *engine_routes]
    app.add_routes([web.route(r.method, r.path, _on_main(main, r.handler)) for r in on_main])
    return app


def _on_main(main: WorkHandoff, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
             ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def hop(request: web.Request) -> web.StreamResponse:
        await request.read()  # here, on the connection's loop; the handler reads the kept bytes
        return await main.call(_awaited(handler(request)))
    return hop


async def _awaited(response: Awaitable[web.StreamResponse]) -> web.StreamResponse:
    return await response


def _hook_refusals(stack: AsyncExitStack, app: App) -> RefusalAudit:
    """The deploy hooks' refusal audit (on the main loop, where the hooks run), rate-limited."""
    async def write(detail: str) -> None:
        await app.rollbot.audit(environment=app.runbook.default_environment, actor="ci",
                                kind="refusal", detail=detail)
    refusals = RefusalAudit(write, what="deploy hook requests")
    refusals.start()
    stack.push_async_callback(refusals.close)
    return refusals


async def _start_ack_loop(stack: AsyncExitStack) -> tuple[AckLoop, WorkHandoff]:
    """The ack loop and the handoff to this (main) loop; on exit, wait for handed-over work."""
    ack = AckLoop()
    ack.start()
    stack.push_async_callback(ack.stop)
    handoff = WorkHandoff(asyncio.get_running_loop())
    stack.push_async_callback(handoff.close, 3600.0)
    return ack, handoff


async def _listen(stack: AsyncExitStack, ack: AckLoop, app: web.Application, *, host: str,
                  port: int, drain: Draining) -> int:
    """Serve ``app`` on the ack loop until ``stack`` closes; its port (``port`` 0: a free one)."""
    drain.serve(app)
    runner = web.AppRunner(app, access_log=None)
    await ack.run(runner.setup())
    stack.push_async_callback(lambda: ack.run(runner.cleanup()))

    async def start() -> int:
        site = web.TCPSite(runner, host, port)
        await site.start()
        drain.closes(site, on=ack.run)  # the site belongs to the ack loop: stopped there
        return int(runner.addresses[0][1])
    try:
        return await ack.run(start())
    except OSError as exc:  # a mistyped HOST, or PORT taken by another process
        raise ConfigError(f"rollbot cannot listen on {host}:{port}: {exc.strerror or exc}. Set "
                          "HOST to an address of this machine (127.0.0.1, or 0.0.0.0 for all) "
                          "and PORT to a free port") from None


async def _open_guard(stack: AsyncExitStack, ack: AckLoop, app: App, *, secret: str,
                      audit: Callable[[str], Awaitable[None]]) -> ReplayGuard:
    """The replay guard with its own small pool and its refusal audit, on the ack loop."""
    async def open_on_ack_loop() -> ReplayGuard:
        seen = await app.open_seen_signatures()
        refusals = RefusalAudit(audit)
        refusals.start()
        guard = ReplayGuard(secret, seen=seen, refusals=refusals)
        guard.start()

        async def close() -> None:
            await guard.close()
            await refusals.close()
            await seen.close()
        stack.push_async_callback(lambda: ack.run(close()))
        return guard
    return await ack.run(open_on_ack_loop())


@dataclass
class SlackService:
    """A running Slack front: the engine app, the Bolt app and the HTTP site."""

    app: App
    front: SlackFront
    bolt: AsyncApp
    port: int
    auto: AutoRollback
    drain: Draining


def _require(settings: Settings, runbook: Runbook) -> tuple[str, str | None]:
    """The bot token, and the signing secret (None in Socket Mode, where nothing is signed)."""
    if runbook.slack is None:
        raise ConfigError(f"{settings.rollbot_config}: key 'slack' is missing (the [slack] table "
                          "with incidents_channel and allowed_users)")
    if settings.slack_app_token:
        if not settings.slack_bot_token:
            raise ConfigError("SLACK_BOT_TOKEN must be set to serve Slack")
        return settings.slack_bot_token, None
    if not settings.slack_bot_token or not settings.slack_signing_secret:
        raise ConfigError("SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET must be set to serve Slack "
                          "over HTTP (or set SLACK_APP_TOKEN for Socket Mode)")
    return settings.slack_bot_token, settings.slack_signing_secret


@asynccontextmanager
async def running(settings: Settings, runbook: Runbook, *, host: str | None = None,
                  min_update_interval_s: float = 1.0) -> AsyncIterator[SlackService]:
    """Start everything; on exit, let running rollbacks finish and close what was opened."""
    token, secret = _require(settings, runbook)
    assert runbook.slack is not None
    install_log_redaction()  # also when embedded without `rollbot serve` (the demo, tests)
    async with AsyncExitStack() as stack:
        app = await stack.enter_async_context(open_app(settings, runbook))
        # One budget for every Slack call of the process: all runs, fronts and Bolt share it.
        client = BudgetedWebClient(token=token, base_url=settings.slack_api_url, timeout=10,
                                   on_call=app.metrics.slack_call, budget=SlackBudget())

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
                           recoveries=app.recoveries, home=app.home,
                           min_update_interval_s=min_update_interval_s)
        stack.push_async_callback(front.wait_idle, 3600.0)
        app.home.publish_with(front.home.publish)  # the home tab: kept current while open
        app.home.start()
        stack.push_async_callback(app.home.stop)
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
        app.notify.start()  # signed events out (stopped by open_app, after the runs)
        hooks = DeployHooks(secret=settings.rollbot_webhook_secret, auto=app.auto,
                            refusals=_hook_refusals(stack, app))
        ack, handoff = await _start_ack_loop(stack)
        bolt = build_app(front=front, client=client, signing_secret=secret, auto=slack_auto,
                         handoff=handoff)

        async def audit(detail: str) -> None:
            await handoff.call(app.rollbot.audit(environment=runbook.default_environment,
                                                 actor="slack", kind="refusal", detail=detail))

        if secret is None:  # Socket Mode: Slack's requests come over the WebSocket only
            routes = web_app(rollbot=app.rollbot, main=handoff, hooks=hooks,
                             metrics=app.metrics)
        else:
            guard = await _open_guard(stack, ack, app, secret=secret, audit=audit)
            routes = web_app(bolt=bolt, rollbot=app.rollbot, main=handoff, guard=guard,
                             hooks=hooks, metrics=app.metrics)
        drain = Draining()
        port = await _listen(stack, ack, routes, host=host or settings.host, port=settings.port,
                             drain=drain)
        if settings.slack_app_token:
            await _connect_socket_mode(stack, ack, bolt, settings.slack_app_token)
            log.info("Socket Mode connected; HTTP serves /healthz on port %s", port)
        else:
            log.info("rollbot serves Slack on port %s (%s)", port, EVENTS_PATH)
        # Everything made at start-up is kept for the process's life: out of the collector's
        # sight, full collections (which pause the ack loop too: one GIL) stay short.
        gc.freeze()
        yield SlackService(app=app, front=front, bolt=bolt, port=port, auto=app.auto,
                           drain=drain)


async def _connect_socket_mode(stack: AsyncExitStack, ack: AckLoop, bolt: AsyncApp,
                              app_token: str) -> None:
    """Bolt's Socket Mode client, on the ack loop like the HTTP server (its acks go there)."""
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    async def connect() -> None:
        socket_mode = AsyncSocketModeHandler(bolt, app_token)
        stack.push_async_callback(  # also when connecting fails
            lambda: ack.run(socket_mode.close_async()))  # type: ignore[no-untyped-call]
        # apps.connections.open once, outside slack_sdk's connect(), which retries a refused
        # token forever: a wrong SLACK_APP_TOKEN stops start-up with Slack's error instead.
        socket_mode.client.wss_uri = await socket_mode.client.issue_new_wss_url()
        await socket_mode.connect_async()  # type: ignore[no-untyped-call]
    await ack.run(connect())


@dataclass
class HooksService:
    """``rollbot serve`` without Slack: the engine app and the HTTP site of the hooks."""

    app: App
    port: int
    auto: AutoRollback
    drain: Draining


@asynccontextmanager
async def running_without_slack(settings: Settings, runbook: Runbook, *,
                                host: str | None = None) -> AsyncIterator[HooksService]:
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
        app.notify.start()  # signed events out (stopped by open_app, after the runs)
        hooks = DeployHooks(secret=settings.rollbot_webhook_secret, auto=app.auto,
                            refusals=_hook_refusals(stack, app))
        if not settings.rollbot_webhook_secret:
            log.warning("ROLLBOT_WEBHOOK_SECRET is not set: the deploy hooks answer 503")
        ack, handoff = await _start_ack_loop(stack)
        drain = Draining()
        port = await _listen(stack, ack, web_app(rollbot=app.rollbot, main=handoff, hooks=hooks,
                                                 metrics=app.metrics),
                             host=host or settings.host, port=settings.port, drain=drain)
        log.warning("rollbot serves /healthz and the deploy hooks on port %s without Slack; "
                    "automatic rollbacks are reported in this log", port)
        yield HooksService(app=app, port=port, auto=app.auto, drain=drain)


async def serve(settings: Settings, runbook: Runbook, *, host: str | None = None) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully (handlers/shutdown.py); listen on
    ``host`` (default: ``HOST``)."""
    host = host or settings.host
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
            if settings.slack_app_token:
                print(f"rollbot serving Slack over Socket Mode; /healthz on http://{host}:"
                      f"{service.port}/healthz", flush=True)
            else:
                print(f"rollbot serving Slack on http://{host}:{service.port}{EVENTS_PATH}",
                      flush=True)
    except BaseException:
        await stack.aclose()
        raise
    await signals.first.wait()
    print("rollbot: stopping; running rollbacks stop after their current step", flush=True)
    await stop_gracefully(app=service.app, drain=service.drain, close=stack.aclose,
                          signals=signals)
