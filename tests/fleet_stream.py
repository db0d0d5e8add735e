"""Synthetic fleet runs: the events a fleet rollback publishes, host by host, per the contract."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.config import load_runbook
from bot.engine import step_infos
from bot.events import (
    OutputLine,
    RunEvent,
    RunFinished,
    RunStarted,
    StepFinished,
    StepInfo,
    StepStarted,
)
from bot.model import (
    HostOutcome,
    ProcedureName,
    RollbackRequest,
    RunOutcome,
    RunStatus,
    StepResult,
    StepStatus,
)
from bot.procedures.catalog import ProcedureInputs, build
from bot.versions import parse_version

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
ENV = load_runbook(Path(__file__).parent / "data" / "rollbot.example.toml").environments[
    "production"]
REQUEST = RollbackRequest(environment="production", procedure=ProcedureName.SIMPLE,
                          target=parse_version("v1.2.2"), requested_by="U0ALICE",
                          reason="users see 500s")
SIMPLE = step_infos(build(ProcedureName.SIMPLE, ProcedureInputs(
    env=ENV, current="v1.2.3", target="v1.2.2", epoch=1, backup=None)))
UP = "runs v1.2.2, healthy, all services up"


def fleet_steps(hosts: list[str]) -> tuple[StepInfo, ...]:
    """The simple procedure's steps for every host, numbered through the whole run."""
    return tuple(replace(s, index=i * len(SIMPLE) + s.index, host=h)
                 for i, h in enumerate(hosts) for s in SIMPLE)


@dataclass
class FleetStream:
    """Builds a fleet run's events in the order the engine would publish them."""

    hosts: list[str]
    run_id: int = 12
    events: list[RunEvent] = field(default_factory=list)
    clock: datetime = NOW

    def __post_init__(self) -> None:
        self.steps = fleet_steps(self.hosts)
        self.results: list[StepResult] = []
        self.events.append(RunStarted(run_id=self.run_id, request=REQUEST, from_version="v1.2.3",
                                      to_version="v1.2.2", steps=self.steps, checks=(),
                                      hosts=tuple(self.hosts)))

    def own(self, host: str) -> list[StepInfo]:
        return [s for s in self.steps if s.host == host]

    def start(self, host: str, n: int) -> None:
        """Host starts its n-th step (1-based) and prints a line of output."""
        step = self.own(host)[n - 1]
        self.events.append(StepStarted(self.run_id, step))
        self.events.append(OutputLine(self.run_id, step.key, f"{host}: {step.title} …",
                                      host=host))

    def finish(self, host: str, n: int, *, error: str = "", state: str = "") -> None:
        step = self.own(host)[n - 1]
        begun = self.clock
        self.clock += timedelta(seconds=2)
        result = StepResult(key=step.key, title=step.title,
                            status=StepStatus.FAILED if error else StepStatus.SUCCEEDED,
                            started_at=begun, finished_at=self.clock, error=error,
                            output_tail=f"{host}: curl said 503" if error else "", host=host)
        self.results.append(result)
        self.events.append(StepFinished(self.run_id, step, result,
                                        state or f"{host}: after {step.title}"))

    def host_ok(self, host: str) -> None:
        for n in range(1, len(SIMPLE) + 1):
            self.start(host, n)
            self.finish(host, n, state=UP if n == len(SIMPLE) else "")

    def host_fails(self, host: str, at: int, *, error: str, state: str) -> None:
        for n in range(1, at + 1):
            self.start(host, n)
            self.finish(host, n, error=error if n == at else "", state=state if n == at else "")

    def end(self, status: RunStatus, hosts: list[HostOutcome], message: str) -> RunOutcome:
        done = {(r.host, r.key) for r in self.results}
        skipped = tuple(StepResult(key=s.key, title=s.title, status=StepStatus.SKIPPED,
                                   started_at=None, finished_at=None, host=s.host)
                        for s in self.steps if (s.host, s.key) not in done)
        outcome = RunOutcome(run_id=self.run_id, status=status, host_state=message,
                             message=message, steps=(*self.results, *skipped),
                             from_version="v1.2.3", to_version="v1.2.2", hosts=tuple(hosts))
        self.events.append(RunFinished(self.run_id, outcome))
        return outcome


def succeeded(name: str) -> HostOutcome:
    return HostOutcome(name=name, status=RunStatus.SUCCEEDED, state=UP, version="v1.2.2")


def untouched(name: str) -> HostOutcome:
    return HostOutcome(name=name, status=RunStatus.CANCELLED, state="untouched: still runs "
                       "v1.2.3", version="v1.2.3", touched=False)


def all_succeed(hosts: list[str]) -> FleetStream:
    """Canary first, then the rest: every host ends on v1.2.2."""
    stream = FleetStream(hosts)
    for h in hosts:
        stream.host_ok(h)
    stream.end(RunStatus.SUCCEEDED, [succeeded(h) for h in hosts],
               f"Rolled back to v1.2.2 on all {len(hosts)} hosts.")
    return stream


def second_host_fails(hosts: list[str]) -> FleetStream:
    """The canary succeeds; the second host fails its health wait; the rest stay untouched."""
    stream = FleetStream(hosts)
    canary, bad, rest = hosts[0], hosts[1], hosts[2:]
    stream.host_ok(canary)
    stream.host_fails(bad, 5, error="health answered 503 for 60 s.",
                      state="services UP but unhealthy; compose file names v1.2.2")
    stream.end(RunStatus.FAILED, [
        succeeded(canary),
        HostOutcome(name=bad, status=RunStatus.FAILED,
                    state="services UP but unhealthy; compose file names v1.2.2",
                    version="v1.2.2"),
        *(untouched(h) for h in rest)],
        f"{bad} FAILED at 'Wait for health': health answered 503; the rollout stopped.")
    return stream
