"""Before a fleet run: one connection per host, pre-flight on every host, the run built."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace

from bot.autorollback.deploys import Quarantined
from bot.config import EnvironmentConfig
from bot.edges.session import HostSession, open_session
from bot.errors import RollbotError
from bot.events import Observer, StepInfo
from bot.fleet.lanes import HostPlan, Lane, numbered_infos, plan_hosts
from bot.fleet.rollout import FleetRun
from bot.fleet.waves import rollout_sentence, rollout_waves
from bot.model import Check, ProcedureName, RollbackRequest
from bot.ports import HttpProbe
from bot.preflight import Preflight, changed_since_preflight, run_preflight
from bot.procedures.base import RunFacts, StepContext
from bot.procedures.catalog import ProcedureInputs
from bot.store.runs import Store
from bot.versions import try_parse_version

_DATABASE_PROCEDURES = (ProcedureName.MIGRATIONS, ProcedureName.RESTORE)


@dataclass
class FleetHosts:
    """The fleet's open sessions (member order) and the hosts that could not be reached."""

    sessions: dict[str, HostSession]
    unreachable: tuple[Check, ...]

    async def adopt(self, run_id: int) -> None:
        for session in self.sessions.values():
            await session.host.adopt(run_id)


async def connect_fleet(stack: AsyncExitStack, env_name: str, env: EnvironmentConfig, *,
                        store: Store, actor: str) -> FleetHosts:
    """Connect to every host at once (host keys verified), kept open in ``stack``."""
    async def connect(name: str, host_env: EnvironmentConfig) -> tuple[AsyncExitStack,
                                                                       HostSession]:
        own = AsyncExitStack()
        try:
            session = await own.enter_async_context(
                open_session(env_name, host_env, store=store, actor=actor, run_id=None))
        except BaseException:
            await own.aclose()
            raise
        return own, session

    members = env.members
    answers = await asyncio.gather(*(connect(n, e) for n, e in members), return_exceptions=True)
    sessions: dict[str, HostSession] = {}
    unreachable: list[Check] = []
    unexpected: BaseException | None = None
    for (name, _), answer in zip(members, answers, strict=True):
        if isinstance(answer, RollbotError):
            unreachable.append(Check(f"{name}: Host reachable", False, str(answer)))
        elif isinstance(answer, BaseException):
            unexpected = unexpected or answer
        else:
            own, session = answer
            stack.push_async_callback(own.aclose)  # closed with the run, whatever happens
            sessions[name] = session
    if unexpected is not None:
        raise unexpected
    return FleetHosts(sessions, tuple(unreachable))


@dataclass(frozen=True)
class FleetPreflight:
    """The whole fleet's pre-flight (its checks named per host) and each host's own."""

    whole: Preflight
    hosts: dict[str, Preflight]


@dataclass(frozen=True)
class FleetReady:
    """A fleet connected and pre-flighted: what the run is built from."""

    connected: FleetHosts
    pre: FleetPreflight


async def read_fleet(stack: AsyncExitStack, env_name: str, env: EnvironmentConfig,
                     request: RollbackRequest, *, store: Store, probe: HttpProbe,
                     quarantined: Sequence[Quarantined]) -> FleetReady:
    """Connect to every host (kept open in ``stack``) and run every host's pre-flight."""
    connected = await connect_fleet(stack, env_name, env, store=store,
                                    actor=request.requested_by)
    pre = await fleet_preflight(connected, env, request, quarantined=quarantined, probe=probe)
    return FleetReady(connected, pre)


async def fleet_preflight(hosts: FleetHosts, env: EnvironmentConfig, request: RollbackRequest,
                          *, quarantined: Sequence[Quarantined], probe: HttpProbe
                          ) -> FleetPreflight:
    """Every host's pre-flight reads, side by side; the database's checks once, on its host."""
    db_host = env.database_member[0]
    database_work = request.procedure in _DATABASE_PROCEDURES
    other = request
    if request.pinned is not None:
        # The backup and the migrations are pinned on the database's host only.
        other = replace(request, pinned=replace(request.pinned, backup=None, migrations=()))
    envs = dict(env.members)

    async def one(name: str, session: HostSession) -> Preflight:
        mine = name == db_host or not database_work
        try:
            return await run_preflight(host=session.host, docker=session.docker,
                                       env=envs[name], request=request if mine else other,
                                       quarantined=quarantined, probe=probe, database=mine)
        except RollbotError as exc:
            # This host's reads failed (its connection dropped, Docker did not answer): the
            # others' results still show, and the run is refused with this host named.
            return Preflight(checks=(Check("Pre-flight reads", False, str(exc)),), current="",
                             target="", backup=None)

    names = list(hosts.sessions)
    found = await asyncio.gather(*(one(n, hosts.sessions[n]) for n in names))
    per_host = dict(zip(names, found, strict=True))
    return FleetPreflight(combine_preflights(per_host, hosts.unreachable, db_host), per_host)


def combine_preflights(per_host: dict[str, Preflight], unreachable: tuple[Check, ...],
                       db_host: str) -> Preflight:
    """The fleet's pre-flight: every host's checks named with it; from: the newest running."""
    checks = [replace(c, name=f"{name}: {c.name}") for name, pre in per_host.items()
              for c in pre.checks]
    checks.extend(unreachable)
    read = {name: pre for name, pre in per_host.items() if pre.current}
    currents = {name: pre.current for name, pre in read.items()}
    current = max(currents.values(), key=_release_order, default="")
    if len(set(currents.values())) > 1:
        checks.append(Check("Current version", True,
                            f"the hosts disagree: {_who_runs(currents)}; each host rolls back "
                            f"from its own version"))
    targets = {name: pre.target for name, pre in read.items() if pre.target}
    target = next(iter(targets.values()), "")
    if len(set(targets.values())) > 1:
        checks.append(Check("Target version", False,
                            f"the hosts resolve the target differently: {_who_runs(targets)}; "
                            "name the version to roll back to"))
        target = ""
    db = per_host.get(db_host)
    return Preflight(checks=tuple(checks), current=current, target=target,
                     backup=db.backup if db else None, migrations=db.migrations if db else ())


def _release_order(version: str) -> tuple[int, object]:
    parsed = try_parse_version(version)
    return (1, parsed) if parsed is not None else (0, version)


def _who_runs(versions: dict[str, str]) -> str:
    by: dict[str, list[str]] = {}
    for name, version in versions.items():
        by.setdefault(version or "nothing", []).append(name)
    return "; ".join(f"{', '.join(names)} {'runs' if len(names) == 1 else 'run'} {v}"
                     for v, names in by.items())


async def fleet_changes(hosts: FleetHosts, env: EnvironmentConfig, pre: FleetPreflight) -> str:
    """What moved on any host since its pre-flight (the re-look after the lock); "" if nothing."""
    envs = dict(env.members)
    names = list(hosts.sessions)
    moved = await asyncio.gather(*(
        changed_since_preflight(hosts.sessions[n].host, hosts.sessions[n].docker, envs[n],
                                pre.hosts[n]) for n in names))
    return " ".join(f"{n}: {m}" for n, m in zip(names, moved, strict=True) if m)


def fleet_plans(env: EnvironmentConfig, request: RollbackRequest, pre: FleetPreflight, *,
                epoch: int | None = None) -> tuple[HostPlan, ...]:
    """Each host's steps, built from its own environment and its own current version."""
    epoch = epoch or int(time.time())
    inputs = [(name, ProcedureInputs(env=host_env, current=pre.hosts[name].current,
                                     target=pre.whole.target, epoch=epoch,
                                     backup=pre.whole.backup))
              for name, host_env in env.members]
    return plan_hosts(request.procedure, inputs, database_host=env.database_member[0])


def fleet_step_infos(env: EnvironmentConfig, request: RollbackRequest,
                     pre: FleetPreflight) -> tuple[StepInfo, ...]:
    """What the plan and the card list: every host's steps, each named with its host."""
    return tuple(i for infos in numbered_infos(fleet_plans(env, request, pre)) for i in infos)


def fleet_sentence(env: EnvironmentConfig, request: RollbackRequest) -> str:
    """The plan's words for how its steps apply: per host, in which order."""
    database = env.database_member[0] if request.procedure in _DATABASE_PROCEDURES else None
    return rollout_sentence(rollout_waves([n for n, _ in env.members], env.fleet),
                            canary=env.fleet.canary, database_host=database)


def fleet_run(*, run_id: int, request: RollbackRequest, env: EnvironmentConfig,
              pre: FleetPreflight, hosts: FleetHosts, probe: HttpProbe,
              observers: list[Observer]) -> FleetRun:
    """The run, one lane per host, each with its own connection and context."""
    plans = fleet_plans(env, request, pre)
    envs = dict(env.members)
    lanes = []
    for plan, infos in zip(plans, numbered_infos(plans), strict=True):
        session = hosts.sessions[plan.name]
        ctx = StepContext(host=session.host, docker=session.docker, probe=probe,
                          env=envs[plan.name], current=pre.hosts[plan.name].current,
                          target=pre.whole.target, facts=RunFacts(), emit=lambda _line: None)
        lanes.append(Lane(plan=plan, infos=infos, ctx=ctx, state=plan.procedure.initial_state))
    database = (env.database_member[0] if request.procedure in _DATABASE_PROCEDURES else None)
    return FleetRun(run_id=run_id, request=request, lanes=lanes,
                    waves=rollout_waves([n for n, _ in env.members], env.fleet),
                    fleet=env.fleet, database_host=database, checks=pre.whole.checks,
                    current=pre.whole.current, observers=observers)
