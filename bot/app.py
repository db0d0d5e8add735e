"""The composition root: builds every edge once, owns their lifetimes, hands out the service."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry

from bot.approvals import ApprovalService, TwoPersonRule
from bot.autorollback.deploys import DeployStore
from bot.autorollback.machine import AutoRollback
from bot.autorollback.sightings import Sightings
from bot.config import Runbook, Settings, load_runbook
from bot.dashboard import DashboardReader, DashboardRefresher, HomeViewers
from bot.edges.http import HttpxProbe
from bot.model import RunOutcome, RunStatus, VerificationResult
from bot.notify.config import Webhook, environment_secrets, resolve_webhooks
from bot.notify.delivery import DeliveryLoop
from bot.notify.outbox import Outbox
from bot.notify.recorder import EventRecorder
from bot.post_rollback.follow_up import FollowUp
from bot.post_rollback.report import Reporter
from bot.post_rollback.schedule import VerificationSchedule
from bot.recovery.interrupted import DeadRunReaper
from bot.recovery.runs import Recoveries
from bot.service import Rollbot
from bot.store.embedded_pg import EmbeddedPostgres
from bot.store.replays import SeenSignatures
from bot.store.runs import Store
from bot.telemetry.metrics import Metrics, shared_state_reader

log = logging.getLogger(__name__)


@dataclass
class App:
    settings: Settings
    runbook: Runbook
    store: Store
    rollbot: Rollbot
    verifier: VerificationSchedule
    reporter: Reporter
    deploys: DeployStore
    auto: AutoRollback  # tells the log until a front gives it another notifier (notify_with)
    approvals: ApprovalService  # what the fronts ask of cards waiting for confirmation
    follow_up: FollowUp         # and of a run once it ended
    recoveries: Recoveries      # and after a cancel that left production down
    metrics: Metrics            # fed by the engine's hooks here, by the Slack front, scraped
    reaper: DeadRunReaper       # `rollbot serve` starts it: runs whose process died
    home: DashboardRefresher    # the home tab's state; `rollbot serve` keeps open tabs current
    notify: DeliveryLoop        # signed events out: `rollbot serve` and CLI runs start it
    event_recorder: EventRecorder  # fed by the engine's hooks here: what `notify` sends

    async def open_seen_signatures(self) -> SeenSignatures:
        """Slack requests already taken (the replay guard), with a small pool of its own made
        on the calling event loop (the ack path's); the caller closes it."""
        return await SeenSignatures.open(self.store.dsn)


def load(settings: Settings) -> Runbook:
    """Validate the runbook before anything connects (raises ConfigError)."""
    return load_runbook(settings.rollbot_config)


def notify_webhooks(settings: Settings, runbook: Runbook) -> tuple[Webhook, ...]:
    """The runbook's webhooks with their secrets, read from the environment or ``.env``."""
    env_file = settings.model_config.get("env_file")
    return resolve_webhooks(runbook.notify, environment_secrets(
        os.environ, Path(str(env_file)) if isinstance(env_file, str | Path) else None))


async def database_url(settings: Settings) -> str:
    """``DATABASE_URL``, or rollbot's own embedded PostgreSQL in its data directory."""
    if settings.database_url:
        return settings.database_url
    import asyncio

    pg = EmbeddedPostgres(settings.rollbot_data_dir.resolve())
    return await asyncio.to_thread(pg.start)


@asynccontextmanager
async def open_app(settings: Settings, runbook: Runbook | None = None) -> AsyncIterator[App]:
    runbook = runbook or load(settings)
    webhooks = notify_webhooks(settings, runbook)  # ConfigError before anything connects
    async with AsyncExitStack() as stack:
        store = await Store.open(await database_url(settings))
        stack.push_async_callback(store.close)
        client = await stack.enter_async_context(httpx.AsyncClient())
        notify_cfg = runbook.notify
        notify_client = await stack.enter_async_context(
            httpx.AsyncClient(timeout=notify_cfg.timeout_s, follow_redirects=False))

        async def live_url(run_id: int) -> str | None:
            run = await store.get_run(run_id)
            return run.live_message_url if run is not None else None

        notify = DeliveryLoop(outbox=Outbox(store.pool), client=notify_client,
                              webhooks=webhooks, retry_delays_s=notify_cfg.retry_delays_s,
                              timeout_s=notify_cfg.timeout_s, poll_s=notify_cfg.poll_s,
                              audit=store.audit, live_url=live_url)
        events = EventRecorder(outbox=Outbox(store.pool), webhooks=webhooks,
                               get_run=store.get_run, written=notify.poke)
        # Pushed before the automatic rollback's: they run after its runs have ended.
        stack.push_async_callback(notify.stop)
        stack.push_async_callback(events.settle)
        rollbot = Rollbot(runbook=runbook, store=store, probe=HttpxProbe(client))
        # Every front schedules the checks; `rollbot serve` is the process that runs them.
        verifier = VerificationSchedule(rollbot=rollbot)
        reporter = Reporter(store=store, directory=runbook.incident_logs_dir,
                            runbook=runbook)

        # The report's one writer when a run ends and after each scheduled check; the fronts
        # show what was written (Reporter.saved) instead of writing again.
        async def write_report(outcome: RunOutcome) -> None:
            if outcome.status is not RunStatus.REFUSED:
                await reporter.write(outcome.run_id)

        async def rewrite_report(result: VerificationResult) -> None:
            await reporter.write(result.run_id)

        deploys = DeployStore(store.pool)
        auto = AutoRollback(rollbot=rollbot, deploys=deploys, sightings=Sightings(store.pool))
        stack.push_async_callback(auto.wait_idle, 3600.0)  # a countdown's rollback finishes
        stack.push_async_callback(auto.hand_over)  # first: other replicas carry the watches on

        rollbot.finished_hooks.append(verifier.after_run)
        rollbot.finished_hooks.append(write_report)
        rollbot.finished_hooks.append(auto.quarantine_rolled_back)
        verifier.checked_hooks.append(rewrite_report)
        metrics = Metrics(CollectorRegistry(), environments=runbook.environments,
                          read_shared=shared_state_reader(store.pool))
        store.ended_hooks.append(metrics.run_ended)
        rollbot.run_observers.append(metrics.observe_run)
        verifier.checked_hooks.append(metrics.verification_checked)
        rollbot.run_observers.append(events.observe_run)
        store.ended_hooks.append(events.run_ended)
        verifier.checked_hooks.append(events.verification_checked)
        auto.quarantine_hooks.append(events.version_quarantined)
        auto.countdown_hooks.append(events.countdown_started)
        slack = runbook.slack
        rule = TwoPersonRule(restore=slack.restore_requires_second_approver,
                             migrations=slack.migrations_requires_second_approver
                             ) if slack else TwoPersonRule()
        approvals = ApprovalService(approvals=store.approvals, runbook=runbook, rule=rule,
                                    audit=store.audit)
        follow_up = FollowUp(store=store, verifier=verifier, reporter=reporter,
                             default_environment=runbook.default_environment)
        yield App(settings=settings, runbook=runbook, store=store, rollbot=rollbot,
                  verifier=verifier, reporter=reporter, deploys=deploys, auto=auto,
                  approvals=approvals, follow_up=follow_up, recoveries=Recoveries(rollbot),
                  metrics=metrics, notify=notify, event_recorder=events,
                  reaper=DeadRunReaper(store=store, recoveries=rollbot.recoveries,
                                       who=rollbot.owner),
                  home=DashboardRefresher(reader=DashboardReader(
                      store.pool, environments=list(runbook.environments),
                      default_environment=runbook.default_environment),
                      viewers=HomeViewers(store.pool)))
