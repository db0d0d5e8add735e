"""A fleet host's lane: its own procedure, context and state, run a segment at a time."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from bot.engine import run_step, state_after_failure, step_infos
from bot.events import RunEvent, StepFinished, StepInfo
from bot.model import HostOutcome, ProcedureName, RunStatus, StepResult, StepStatus
from bot.procedures.base import Procedure, ProcedureInputs, Safeguard, Step, StepContext
from bot.procedures.catalog import build
from bot.procedures.steps import STOP, SWITCH

# What every host of a migrations/restore rollout runs before the database work; the steps
# between "Stop services" and the switch are the database work, done once on its host.
_HOST_STEPS_BEFORE_DATABASE = ("check_current", STOP)
_DATABASE_PROCEDURES = (ProcedureName.MIGRATIONS, ProcedureName.RESTORE)


@dataclass(frozen=True)
class HostPlan:
    """One host's part of the rollout: its procedure's steps, and where its segments end."""

    name: str
    procedure: Procedure
    steps: tuple[Step, ...]
    stopped_end: int   # migrations/restore: the steps up to and including "Stop services"
    database_end: int  # ... and the database work (only on the database's host)


def plan_hosts(procedure: ProcedureName, inputs: Sequence[tuple[str, ProcedureInputs]], *,
               database_host: str) -> tuple[HostPlan, ...]:
    """Each host's steps: the whole procedure, or for a database procedure its host part."""
    plans = []
    for name, i in inputs:
        built = build(procedure, i)
        steps = built.steps
        if procedure not in _DATABASE_PROCEDURES:
            plans.append(HostPlan(name, built, steps, len(steps), len(steps)))
            continue
        keys = [s.key for s in steps]
        stop, switch = keys.index(STOP), keys.index(SWITCH)
        if name != database_host:
            steps = tuple(s for s in steps[:stop + 1] if s.key in _HOST_STEPS_BEFORE_DATABASE
                          ) + steps[switch:]
            keys = [s.key for s in steps]
            stop, switch = keys.index(STOP), keys.index(SWITCH)
        plans.append(HostPlan(name, built, steps, stop + 1, switch))
    return tuple(plans)


def numbered_infos(plans: Sequence[HostPlan]) -> tuple[tuple[StepInfo, ...], ...]:
    """Each host's step infos, numbered over the whole run (host after host), host named."""
    out, n = [], 0
    for p in plans:
        infos = step_infos(replace(p.procedure, steps=p.steps))
        out.append(tuple(replace(info, index=n + k, host=p.name) for k, info in enumerate(infos)))
        n += len(infos)
    return tuple(out)


@dataclass
class Lane:
    """One host during the run: where it is in its steps, and the state it is in."""

    plan: HostPlan
    infos: tuple[StepInfo, ...]
    ctx: StepContext
    state: str
    cursor: int = 0
    results: list[StepResult] = field(default_factory=list)
    established: set[Safeguard] = field(default_factory=set)
    failed: tuple[Step, StepResult] | None = None

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def finished(self) -> bool:
        return self.failed is None and self.cursor == len(self.plan.steps)

    async def run_to(self, end: int, *, run_id: int, publish: Callable[[RunEvent], None],
                     halted: Callable[[], bool]) -> bool:
        """Run the steps up to ``end`` unless halted before one; False when a step failed."""
        while self.cursor < end and self.failed is None and not halted():
            step, info = self.plan.steps[self.cursor], self.infos[self.cursor]
            result = await run_step(step, info, ctx=self.ctx, established=self.established,
                                    run_id=run_id, publish=publish)
            self.results.append(result)
            self.cursor += 1
            if result.status is StepStatus.SUCCEEDED:
                self.state = step.leaves
                if step.establishes is not None:
                    self.established.add(step.establishes)
            else:
                self.state = state_after_failure(step, result, self.state)
                self.failed = (step, result)
            publish(StepFinished(run_id, info, result, self.state))
        return self.failed is None

    def outcome(self) -> HostOutcome:
        """Where this host ended, as the outcome's message names it."""
        p = self.plan
        done = {r.key for r in self.results if r.status is StepStatus.SUCCEEDED}
        version: str | None = self.ctx.target if SWITCH in done else self.ctx.current
        if self.finished:
            return HostOutcome(p.name, RunStatus.SUCCEEDED, p.procedure.succeeded_state,
                               self.ctx.target)
        if self.failed is not None:
            step, result = self.failed
            if step.key == SWITCH:
                version = None  # the file is old or new, never partial; which is in the output
            return HostOutcome(p.name, step.failure_status,
                               f"FAILED at '{step.title}': {result.error} Left: {self.state}",
                               version)
        if not self.results:
            return HostOutcome(p.name, RunStatus.CANCELLED, self.state, version, touched=False)
        following = p.steps[self.cursor].title
        return HostOutcome(p.name, RunStatus.CANCELLED,
                           f"stopped before '{following}': {self.state}", version)

    def skipped(self) -> list[StepResult]:
        """The steps this host never started, for the outcome's step list."""
        return [StepResult(key=s.key, title=s.title, status=StepStatus.SKIPPED, started_at=None,
                           finished_at=None, host=self.name)
                for s in self.plan.steps[len(self.results):]]
