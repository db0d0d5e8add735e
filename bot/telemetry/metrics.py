"""rollbot's Prometheus metrics: counters fed by hooks, gauges read from the shared database.

The engine knows nothing of Prometheus: the composition root hands ``Metrics``'s methods to the
engine's hooks (``Store.ended_hooks``, ``Rollbot.run_observers``, the verification schedule's
``checked_hooks``) and to the Slack front (its Web API client, its ack timer). Each app builds
its own ``CollectorRegistry``: two apps in one process (tests, the demo) never share counters.

The two gauges describe state every replica shares (who holds an environment, where each deploy
watch is): they are read from the database when ``/metrics`` is scraped, at most once a second,
so every replica reports the same truth and a scrape storm costs one query.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# The classic text format (0.0.4): every Prometheus and agent parses it; our names need no
# escaping, so the newer 1.0.0 label would add nothing but doubt for Prometheus 2.x scrapers.
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4 as CONTENT_TYPE

from bot.autorollback.deploys import DeployState
from bot.events import RunEvent, RunFinished, RunStarted, StepFinished
from bot.model import RunRecord, RunStatus, VerificationResult

log = logging.getLogger(__name__)

__all__ = ["CONTENT_TYPE", "Metrics", "SharedState", "shared_state_reader"]

SHARED_STATE_TTL_S = 1.0
_RUNS_REMEMBERED = 256  # far more runs than one process ever has going at once
SHARED_STATE_TIMEOUT_S = 2.0  # a scrape never waits longer on the database than this
# Steps run from under a second (a version check) to half an hour (a large restore).
_STEP_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600)
# Slack retries a request it has no answer for within 3 s: the buckets crowd below that.
_ACK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 2.5, 3, 5)


@dataclass(frozen=True)
class SharedState:
    """What the database says now: environments whose lock is held, deploys per watch state."""

    locked: frozenset[str] = frozenset()
    deploys: Mapping[str, int] = field(default_factory=dict)


ReadShared = Callable[[], Awaitable[SharedState]]


class Metrics:
    """One process's metrics, in its own registry."""

    def __init__(self, registry: CollectorRegistry, *, environments: Iterable[str] = (),
                 read_shared: ReadShared | None = None) -> None:
        self.registry = registry
        self._environments = tuple(environments)
        self._read_shared = read_shared
        self._read_at: float | None = None
        self._reading = asyncio.Lock()
        self._procedures: dict[int, str] = {}  # run id → procedure, while the run goes
        self.runs = Counter(
            "rollbot_runs_total", "Rollback runs that ended, by outcome",
            ["environment", "procedure", "outcome"], registry=registry)
        self.step_duration = Histogram(
            "rollbot_step_duration_seconds", "How long each step of a run took",
            ["procedure", "step"], buckets=_STEP_BUCKETS, registry=registry)
        self.slack_calls = Counter(
            "rollbot_slack_api_calls_total", "Slack Web API calls made", ["method"],
            registry=registry)
        self.slack_errors = Counter(
            "rollbot_slack_api_errors_total",
            "Slack Web API calls that failed, by Slack's error or the transport failure",
            ["method", "error"], registry=registry)
        self.verification_checks = Counter(
            "rollbot_verification_checks_total", "Verification checks run after a rollback",
            ["tier", "outcome"], registry=registry)
        self.ack_seconds = Histogram(
            "rollbot_ack_seconds", "Time from a request's arrival on /slack/events to the answer",
            buckets=_ACK_BUCKETS, registry=registry)
        self.deploy_watches = Gauge(
            "rollbot_deploy_watches", "Deploys per state of the automatic watch (database)",
            ["state"], registry=registry)
        self.lock_held = Gauge(
            "rollbot_lock_held", "1 while a rollback holds the environment (database)",
            ["environment"], registry=registry)

    # --- fed by the engine's hooks -----------------------------------------------------------

    def run_ended(self, run: RunRecord) -> None:
        """A ``Store.ended_hooks`` entry: every run, however it ended, counts once."""
        self.runs.labels(environment=run.environment, procedure=run.procedure.value,
                         outcome=run.status.value).inc()

    async def observe_run(self, event: RunEvent) -> None:
        """A ``Rollbot.run_observers`` entry: the duration of each step that ran."""
        if isinstance(event, RunStarted):
            if len(self._procedures) >= _RUNS_REMEMBERED:  # runs whose end was never told
                self._procedures.pop(next(iter(self._procedures)))
            self._procedures[event.run_id] = event.request.procedure.value
        elif isinstance(event, StepFinished):
            seconds = event.result.duration_s
            procedure = self._procedures.get(event.run_id)
            if seconds is not None and procedure is not None:
                self.step_duration.labels(procedure=procedure,
                                          step=event.step.key).observe(max(seconds, 0.0))
        elif isinstance(event, RunFinished):
            self._procedures.pop(event.run_id, None)

    async def verification_checked(self, result: VerificationResult) -> None:
        """A ``VerificationSchedule.checked_hooks`` entry."""
        self.verification_checks.labels(tier=result.tier.value,
                                        outcome="passed" if result.ok else "failed").inc()

    # --- fed by the Slack front --------------------------------------------------------------

    def slack_call(self, method: str, error: str | None) -> None:
        """One Web API call; ``error`` is Slack's error name or the transport's, None when ok."""
        self.slack_calls.labels(method=method).inc()
        if error is not None:
            self.slack_errors.labels(method=method, error=error).inc()

    def acked(self, seconds: float) -> None:
        self.ack_seconds.observe(seconds)

    # --- scraped -----------------------------------------------------------------------------

    async def exposition(self) -> bytes:
        """The text a scrape gets, the shared gauges refreshed first (cached a second)."""
        await self.refresh_shared()
        return generate_latest(self.registry)

    async def refresh_shared(self) -> None:
        if self._read_shared is None:
            return
        async with self._reading:  # concurrent scrapes share one read
            if (self._read_at is not None
                    and time.monotonic() - self._read_at < SHARED_STATE_TTL_S):
                return
            try:
                state = await asyncio.wait_for(self._read_shared(), SHARED_STATE_TIMEOUT_S)
            except Exception as exc:
                # The previous values stay: a gauge that vanishes would look like "no lock".
                log.warning("metrics: could not read the shared state from the database: %s",
                            exc or type(exc).__name__)
                return
            self._read_at = time.monotonic()
            self._set_shared(state)

    def _set_shared(self, state: SharedState) -> None:
        self.lock_held.clear()
        for environment in sorted({*self._environments, *state.locked}):
            self.lock_held.labels(environment=environment).set(
                1 if environment in state.locked else 0)
        self.deploy_watches.clear()
        for name in sorted({*(s.value for s in DeployState), *state.deploys}):
            self.deploy_watches.labels(state=name).set(state.deploys.get(name, 0))


def shared_state_reader(pool: asyncpg.Pool) -> ReadShared:
    """Reads the gauges' truth: the runs holding a lock, and the deploys by watch state."""
    holding = [RunStatus.PREFLIGHT.value, RunStatus.RUNNING.value]  # begin_run takes the lock

    async def read() -> SharedState:
        async with pool.acquire(timeout=SHARED_STATE_TIMEOUT_S) as conn:
            locked = await conn.fetch(
                "SELECT DISTINCT environment FROM runs WHERE state = ANY($1::text[])", holding)
            deploys = await conn.fetch("SELECT state, count(*) AS n FROM deploys GROUP BY state")
        return SharedState(locked=frozenset(str(r["environment"]) for r in locked),
                           deploys={str(r["state"]): int(r["n"]) for r in deploys})
    return read
