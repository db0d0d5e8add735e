"""Events a run emits, for any number of observers (terminal, store, Slack)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.model import Check, RollbackRequest, RunOutcome, StepResult


@dataclass(frozen=True)
class StepInfo:
    index: int
    key: str
    title: str
    destructive: bool
    shows: tuple[str, ...]
    # The fleet host this step runs on; "" in a one-host environment. In a fleet, `index` is
    # the step's position in the whole run (host after host), so it stays unique.
    host: str = ""


@dataclass(frozen=True)
class RunStarted:
    run_id: int
    request: RollbackRequest
    from_version: str
    to_version: str
    steps: tuple[StepInfo, ...]
    checks: tuple[Check, ...]
    hosts: tuple[str, ...] = ()  # a fleet's hosts in rollout order; () for one host


@dataclass(frozen=True)
class StepStarted:
    run_id: int
    step: StepInfo


@dataclass(frozen=True)
class OutputLine:
    run_id: int
    step_key: str
    line: str
    host: str = ""  # the fleet host whose step printed it; "" for one host


@dataclass(frozen=True)
class StepFinished:
    run_id: int
    step: StepInfo
    result: StepResult
    host_state: str  # in a fleet: the state of `step.host`


@dataclass(frozen=True)
class RunFinished:
    run_id: int
    outcome: RunOutcome


RunEvent = RunStarted | StepStarted | OutputLine | StepFinished | RunFinished
Observer = Callable[[RunEvent], Awaitable[None]]
