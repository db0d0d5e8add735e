"""The rollbot service: what every front (terminal, Slack) asks of the engine."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from bot.autorollback.deploys import DeployStore, Quarantined
from bot.config import EnvironmentConfig, Runbook
from bot.edges.host_facts import compose_tag, docker_summary, list_backups, running_tag
from bot.edges.session import HostSession, open_session
from bot.engine import Run, step_infos
from bot.errors import PreflightTimeout, RollbotError
from bot.events import Observer, StepInfo
from bot.fleet.prepare import (
    FleetReady,
    fleet_changes,
    fleet_run,
    fleet_sentence,
    fleet_step_infos,
    read_fleet,
)
from bot.model import (
    Backup,
    Check,
    ContainerState,
    ImageTag,
    RollbackRequest,
    RunOutcome,
    RunRecord,
    RunStatus,
)
from bot.ports import HttpProbe
from bot.preflight import Preflight, changed_since_preflight, run_preflight
from bot.preflight_deadline import preflight_deadline
from bot.procedures.base import RunFacts, StepContext
from bot.procedures.catalog import ProcedureInputs, build
from bot.recovery.offers import offer_recorder
from bot.recovery.store import RecoveryStore
from bot.store.live_messages import set_live_message
from bot.store.runs import Store, step_recorder
from bot.telemetry.logs import run_logged

log = logging.getLogger(__name__)

HEARTBEAT_S = 5.0


@dataclass(frozen=True)
class Plan:
    """A dry run: the checks, and the exact steps and commands that would run."""

    request: RollbackRequest
    preflight: Preflight
    title: str
    steps: tuple[StepInfo, ...]


@dataclass(frozen=True)
class Versions:
    running: str | None
    in_compose_file: str
    tags: tuple[ImageTag, ...]
    containers: tuple[ContainerState, ...]


class Rollbot:
    """Plans and runs rollbacks; records everything in the store."""

    def __init__(self, *, runbook: Runbook, store: Store, probe: HttpProbe,
                 owner: str | None = None) -> None:
        self.runbook = runbook
        self.store = store
        self.probe = probe
        self.finished_hooks: list[Callable[[RunOutcome], Awaitable[None]]] = []
        self.run_observers: list[Observer] = []  # given every run's events (e.g. the metrics)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self.active: dict[int, Run] = {}
        self.stopping = ""  # why rollbot is shutting down, once it is (no new step runs)
        self.recoveries = RecoveryStore(store.pool)

    def environment(self, name: str | None) -> tuple[str, EnvironmentConfig]:
        return self.runbook.environment(name)

    async def plan(self, request: RollbackRequest) -> Plan:
        """Pre-flight and the exact steps; nothing that changes state is run."""
        env_name, env = self.environment(request.environment)
        quarantined = await self.quarantined(env_name)
        fleet: FleetReady | None = None
        try:
            async with preflight_deadline(env.timeouts.preflight_s):
                if env.hosts:
                    async with contextlib.AsyncExitStack() as stack:
                        fleet = await read_fleet(stack, env_name, env, request,
                                                 store=self.store, probe=self.probe,
                                                 quarantined=quarantined)
                    pre = fleet.pre.whole
                else:
                    async with open_session(env_name, env, store=self.store,
                                            actor=request.requested_by, run_id=None) as session:
                        pre = await run_preflight(host=session.host, docker=session.docker,
                                                  env=env, request=request,
                                                  quarantined=quarantined, probe=self.probe)
        except PreflightTimeout as exc:
            # The card (or `plan`) shows the stalled check as a refusal, with no button.
            pre = Preflight(checks=(Check("Pre-flight finished", False, str(exc)),),
                            current="?", target=str(request.target or ""), backup=None)
            await self.store.audit(environment=env_name, actor=request.requested_by,
                                   kind="plan", detail=f"{request.procedure}: {exc}")
            return Plan(request=request, preflight=pre, title="(pre-flight did not finish)",
                        steps=())
        await self.store.audit(environment=env_name, actor=request.requested_by, kind="plan",
                               detail=f"{request.procedure} to {pre.target or '?'}")
        holder = await self.store.active_run(env_name)
        lock = (Check("Lock", True, f"free: no rollback is running in {env_name}")
                if holder is None else
                Check("Lock", False, f"held by {holder.requested_by}: run #{holder.id} "
                                     f"{holder.from_version or '?'} → {holder.to_version or '?'}"
                                     f" since {holder.created_at:%H:%M:%S} UTC"))
        pre = replace(pre, checks=(*pre.checks, lock))
        if not pre.target:
            return Plan(request=request, preflight=pre, title="(no target version)", steps=())
        procedure = build(request.procedure, _inputs(env, pre))
        if fleet is not None:
            return Plan(request=request, preflight=pre,
                        title=f"{procedure.title}, {fleet_sentence(env, request)}",
                        steps=fleet_step_infos(env, request, fleet.pre))
        return Plan(request=request, preflight=pre, title=procedure.title,
                    steps=step_infos(procedure))

    async def rollback(self, request: RollbackRequest, *, observers: Sequence[Observer] = (),
                       on_run: Callable[[Run], None] | None = None) -> RunOutcome:
        """Pre-flight (reads only), then take the lock, then run. Refusals change nothing."""
        env_name, env = self.environment(request.environment)
        async with contextlib.AsyncExitStack() as stack:
            stack.enter_context(run_logged(environment=env_name))  # every line of the run
            # Connect and read before taking the lock: a slow pre-flight (a large backup's
            # integrity check) or a failing one never holds the environment's lock.
            session, pre, failure = await self._read_preflight(stack, env_name, env, request)
            try:
                run_id = await self.store.begin_run(request, owner=self.owner)
            except RollbotError as exc:
                await self.store.audit(environment=env_name, actor=request.requested_by,
                                       kind="refusal", detail=str(exc))
                raise
            stack.enter_context(run_logged(environment=env_name, run_id=run_id))
            heart = asyncio.create_task(self.heartbeat(run_id))
            try:  # from here on the lock is ours: every way out below ends the run and frees it
                if isinstance(session, FleetReady):
                    await session.connected.adopt(run_id)
                elif session is not None:
                    await session.host.adopt(run_id)
                await self.store.audit(environment=env_name, actor=request.requested_by,
                                       kind="run", run_id=run_id,
                                       detail=f"requested {request.procedure} to "
                                              f"{request.target or 'previous version'}; reason: "
                                              f"{request.reason or '-'}")
                return await self._locked_rollback(run_id, env_name, env, request, session, pre,
                                                   failure, list(observers), on_run)
            except BaseException as exc:
                # Whatever went wrong, the run must not stay "active" and hold the lock.
                outcome = RunOutcome(run_id=run_id, status=RunStatus.INTERRUPTED,
                                     host_state="unknown: rollbot stopped during the run",
                                     message=f"rollbot stopped during the run: "
                                             f"{exc or type(exc).__name__}")
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.store.finish_run(outcome,
                                                               unless_ended=True))
                raise
            finally:
                heart.cancel()
                self.active.pop(run_id, None)

    async def _read_preflight(
        self, stack: contextlib.AsyncExitStack, env_name: str, env: EnvironmentConfig,
        request: RollbackRequest,
    ) -> tuple[HostSession | FleetReady | None, Preflight | None, RollbotError | None]:
        """Connect (kept open in ``stack`` for the run) and run pre-flight's read-only checks."""
        if env.hosts:
            try:
                async with preflight_deadline(env.timeouts.preflight_s):
                    fleet = await read_fleet(stack, env_name, env, request, store=self.store,
                                             probe=self.probe,
                                             quarantined=await self.quarantined(env_name))
            except RollbotError as exc:
                return None, None, exc
            return fleet, fleet.pre.whole, None
        session: HostSession | None = None
        try:
            # Past the deadline: refused (PreflightTimeout), naming the check still waiting.
            async with preflight_deadline(env.timeouts.preflight_s):
                session = await stack.enter_async_context(
                    open_session(env_name, env, store=self.store, actor=request.requested_by,
                                 run_id=None))
                pre = await run_preflight(host=session.host, docker=session.docker, env=env,
                                          request=request,
                                          quarantined=await self.quarantined(env_name),
                                          probe=self.probe)
        except RollbotError as exc:
            return session, None, exc
        return session, pre, None

    async def _locked_rollback(self, run_id: int, env_name: str, env: EnvironmentConfig,
                               request: RollbackRequest,
                               session: HostSession | FleetReady | None,
                               pre: Preflight | None, failure: RollbotError | None,
                               observers: list[Observer],
                               on_run: Callable[[Run], None] | None) -> RunOutcome:
        try:
            if session is None or pre is None:
                raise failure or RollbotError("pre-flight did not run")
            if not pre.ok:
                return await self.refuse(run_id, env_name, request, pre.checks,
                                          f"Refused by pre-flight, nothing was changed. "
                                          f"{pre.refusal}", pre.current, pre.target)
            if isinstance(session, FleetReady):
                moved = await fleet_changes(session.connected, env, session.pre)
            else:
                moved = await changed_since_preflight(session.host, session.docker, env, pre)
            if moved:
                return await self.refuse(run_id, env_name, request, pre.checks,
                                          f"Refused, nothing was changed: {moved}",
                                          pre.current, pre.target)
            await self.store.start_run(run_id, from_version=pre.current,
                                       to_version=pre.target,
                                       backup=pre.backup.name if pre.backup else None,
                                       checks=pre.checks)
            if isinstance(session, FleetReady):
                # No Resume / Put back offers for a fleet: each host is left in its own state
                # (the outcome names them); a fresh card finishes the rollback.
                run: Run = fleet_run(run_id=run_id, request=request, env=env, pre=session.pre,
                                     hosts=session.connected, probe=self.probe,
                                     observers=[step_recorder(self.store), *self.run_observers,
                                                *observers])
            else:
                run = self._single_host_run(run_id, env_name, env, request, session, pre,
                                            observers)
            self.active[run_id] = run
            self.store.guard(run)  # a lost lock session stops it before its next step
            if self.stopping:  # began while rollbot was shutting down: no step runs
                run.stop(self.stopping)
            if on_run is not None:
                on_run(run)
            outcome = await run.execute()
        except RollbotError as exc:
            # Before any step: connection or pre-flight reading failed; nothing was changed.
            if run_id in self.active:
                raise
            return await self.refuse(run_id, env_name, request, (),
                                      f"Refused before any step, nothing was changed: {exc}",
                                      None, None)
        return await self._finished(env_name, request, outcome)

    def _single_host_run(self, run_id: int, env_name: str, env: EnvironmentConfig,
                         request: RollbackRequest, session: HostSession, pre: Preflight,
                         observers: list[Observer]) -> Run:
        procedure = build(request.procedure, _inputs(env, pre))
        ctx = StepContext(host=session.host, docker=session.docker, probe=self.probe,
                          env=env, current=pre.current, target=pre.target,
                          facts=RunFacts(), emit=lambda _line: None)
        offers = offer_recorder(self.recoveries, environment=env_name,
                                procedure=request.procedure, ctx=ctx, backup=pre.backup)
        return Run(run_id=run_id, request=request, procedure=procedure, context=ctx,
                   checks=pre.checks,
                   observers=[step_recorder(self.store), offers, *self.run_observers,
                              *observers])

    async def _finished(self, env_name: str, request: RollbackRequest,
                        outcome: RunOutcome) -> RunOutcome:
        run_id = outcome.run_id
        await self.store.finish_run(outcome)
        await self.store.audit(environment=env_name, actor=request.requested_by, kind="run",
                               run_id=run_id, detail=f"{outcome.status}: {outcome.message}")
        for hook in self.finished_hooks:  # e.g. schedule the verification checks
            try:
                await hook(outcome)
            except Exception:
                log.exception("after-run hook failed for run #%s", run_id)
        return outcome

    async def quarantined(self, env_name: str) -> list[Quarantined]:
        """The environment's quarantined versions, which "previous" skips."""
        return await DeployStore(self.store.pool).quarantined_in(env_name)

    async def refuse(self, run_id: int, env_name: str, request: RollbackRequest,
                      checks: tuple[Check, ...], message: str, current: str | None,
                      target: str | None) -> RunOutcome:
        outcome = RunOutcome(run_id=run_id, status=RunStatus.REFUSED,
                             host_state="unchanged", message=message, checks=checks,
                             from_version=current, to_version=target)
        await self.store.finish_run(outcome)
        await self.store.audit(environment=env_name, actor=request.requested_by, kind="refusal",
                               run_id=run_id, detail=message)
        return outcome

    async def heartbeat(self, run_id: int) -> None:
        """Check the lock's session, and pick up cancellations asked of another process."""
        await _beat(self.store, self.active, run_id)

    def stop_runs(self, *, because: str) -> list[int]:
        """At shutdown: every active run stops before its next step (the cancel path)."""
        self.stopping = because
        for run in self.active.values():
            run.stop(because)
        return sorted(self.active)

    async def cancel(self, run_id: int, *, by: str) -> bool:
        """Ask an active run to stop before its next step; False when it is not active."""
        recorded = await self.store.request_cancel(run_id, by=by)
        run = self.active.get(run_id)
        if run is not None:
            run.cancel(by)
        return recorded or run is not None

    async def lift_quarantine(self, environment: str, version: str, *, by: str,
                              reason: str) -> bool:
        """Let CI deploy ``version`` again (audited); False when it was not quarantined."""
        if not await DeployStore(self.store.pool).lift(environment, version):
            return False
        await self.audit(environment=environment, actor=by, kind="unquarantine",
                         detail=f"{version}: {reason or 'no reason given'}")
        return True

    async def audit(self, *, environment: str, actor: str, kind: str, detail: str,
                    run_id: int | None = None) -> None:
        await self.store.audit(environment=environment, actor=actor, kind=kind, run_id=run_id,
                               detail=detail)

    async def set_live_message(self, run_id: int, *, channel: str, ts: str,
                               url: str | None) -> None:
        await set_live_message(self.store.pool, run_id, channel=channel, ts=ts, url=url)

    async def run(self, run_id: int) -> RunRecord | None:
        return await self.store.get_run(run_id)

    async def ping(self) -> bool:
        """Whether the database answers (for health checks)."""
        return await self.store.ping()

    async def status(self, environment: str | None = None) -> RunRecord | None:
        env_name, _ = self.environment(environment)
        return await self.store.active_run(env_name)

    async def history(self, *, limit: int = 10) -> list[RunRecord]:
        return await self.store.history(limit=limit)

    async def versions(self, environment: str | None, *, actor: str) -> Versions:
        env_name, env = self.environment(environment)
        async with open_session(env_name, env, store=self.store, actor=actor,
                                run_id=None) as session:
            tags, containers = await docker_summary(session.docker, env)
            in_file = await compose_tag(session.host, env)
        return Versions(running=running_tag(containers, env), in_compose_file=in_file,
                        tags=tuple(tags), containers=tuple(containers))

    async def backups(self, environment: str | None, *, actor: str) -> list[Backup]:
        env_name, env = self.environment(environment)
        if env.database is None:
            raise RollbotError(f"environment {env_name} has no [database] section")
        async with open_session(env_name, env, store=self.store, actor=actor,
                                run_id=None) as session:
            return await list_backups(session.host, env.database)


def _inputs(env: EnvironmentConfig, pre: Preflight) -> ProcedureInputs:
    return ProcedureInputs(env=env, current=pre.current, target=pre.target,
                           epoch=int(time.time()), backup=pre.backup)


async def _beat(store: Store, active: dict[int, Run], run_id: int) -> None:
    while True:
        await asyncio.sleep(HEARTBEAT_S)
        if (lock := store.run_lock(run_id)) is not None:
            await lock.verify()  # a lost session stops the run (``guard``)
        try:
            await store.heartbeat(run_id)
            by = await store.cancel_requested_by(run_id)
        except Exception as exc:
            log.warning("heartbeat for run #%s failed: %s", run_id, exc)
            continue
        run = active.get(run_id)
        if by and run is not None and not run.cancel_requested:
            run.cancel(by)
