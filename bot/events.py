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


@dataclass(frozen=True)
class RunStarted:
    run_id: int
    request: RollbackRequest
    from_version: str
    to_version: str
    steps: tuple[StepInfo, ...]
    checks: tuple[Check, ...]


@dataclass(frozen=True)
class StepStarted:
    run_id: int
    step: StepInfo


@dataclass(frozen=True)
class OutputLine:
    run_id: int
    step_key: str
    line: str


@dataclass(frozen=True)
class StepFinished:
    run_id: int
    step: StepInfo
    result: StepResult
    host_state: str


@dataclass(frozen=True)
class RunFinished:
    run_id: int
    outcome: RunOutcome


RunEvent = RunStarted | StepStarted | OutputLine | StepFinished | RunFinished
Observer = Callable[[RunEvent], Awaitable[None]]
