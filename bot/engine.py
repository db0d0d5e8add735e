"""The procedure engine: runs steps in order, records them, stops at the first failure.

It says what state the host is left in after every step, can be cancelled between steps, and
emits events to any number of observers. Observers are fed from a queue by one task, so a slow
or failing observer (Slack down, say) never slows or stops the rollback itself.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from bot.errors import RollbotError
from bot.events import (
    Observer,
    OutputLine,
    RunEvent,
    RunFinished,
    RunStarted,
    StepFinished,
    StepInfo,
    StepStarted,
)
from bot.model import Check, RollbackRequest, RunOutcome, RunStatus, StepResult, StepStatus
from bot.procedures.base import Procedure, Safeguard, Step, StepContext
from bot.redaction import redact

log = logging.getLogger(__name__)

OUTPUT_TAIL_LINES = 40
_OBSERVER_TIMEOUT_S = 15.0


def step_infos(procedure: Procedure) -> tuple[StepInfo, ...]:
    """What the plan, the card and the live message show of each step (commands redacted)."""
    return tuple(
        StepInfo(index=i, key=s.key, title=s.title, destructive=s.destructive,
                 shows=tuple(redact(c) for c in s.shows))
        for i, s in enumerate(procedure.steps)
    )


class EventBus:
    """Delivers events to observers in order, off the run's critical path."""

    def __init__(self, observers: list[Observer]) -> None:
        self._observers = list(observers)
        self._queue: asyncio.Queue[RunEvent | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._deliver(), name="rollbot-events")

    def publish(self, event: RunEvent) -> None:
        self._queue.put_nowait(event)

    async def close(self) -> None:
        """Deliver everything still queued, then stop."""
        self._queue.put_nowait(None)
        if self._task is not None:
            await self._task

    async def _deliver(self) -> None:
        while (event := await self._queue.get()) is not None:
            for observer in self._observers:
                try:
                    await asyncio.wait_for(observer(event), timeout=_OBSERVER_TIMEOUT_S)
                except Exception:
                    log.exception("observer %r failed on %s; the run goes on", observer,
                                  type(event).__name__)


class Run:
    """One execution of a procedure against one host."""

    def __init__(
        self,
        *,
        run_id: int,
        request: RollbackRequest,
        procedure: Procedure,
        context: StepContext,
        checks: tuple[Check, ...],
        observers: list[Observer],
    ) -> None:
        self.run_id = run_id
        self.request = request
        self.procedure = procedure
        self._ctx = context
        self._checks = checks
        self._bus = EventBus(observers)
        self._cancel_requested_by: str | None = None
        self._stop_why = ""  # rollbot's own reason to stop (not a person's cancel)
        self._infos = step_infos(procedure)
        # Asked before each step; a sentence stops the run there (the lock's session is gone).
        self.gate: Callable[[], Awaitable[str | None]] | None = None

    def cancel(self, by: str) -> None:
        """Stop at the next safe point: before the next step starts."""
        self._cancel_requested_by = by

    def stop(self, why: str) -> None:
        """Stop before the next step like a cancel, for a reason of rollbot's own."""
        if self._cancel_requested_by is None:
            self._stop_why = why
            self._cancel_requested_by = "rollbot"

    @property
    def cancel_requested(self) -> bool:
        return self._cancel_requested_by is not None

    async def execute(self) -> RunOutcome:
        self._bus.start()
        try:
            return await self._execute()
        finally:
            await self._bus.close()

    async def _execute(self) -> RunOutcome:
        ctx = self._ctx
        self._bus.publish(RunStarted(
            run_id=self.run_id, request=self.request, from_version=ctx.current,
            to_version=ctx.target, steps=self._infos, checks=self._checks,
        ))
        state = self.procedure.initial_state
        established: set[Safeguard] = set()
        results: list[StepResult] = []
        for step, info in zip(self.procedure.steps, self._infos, strict=True):
            if self._cancel_requested_by is None and self.gate is not None:
                if why := await self.gate():
                    self.stop(why)
            if self._stop_why:
                return self._finish(
                    RunStatus.CANCELLED, state, results,
                    f"Stopped before '{step.title}': {self._stop_why} Nothing more was run. "
                    f"The host is left: {state}.",
                )
            if self._cancel_requested_by is not None:
                return self._finish(
                    RunStatus.CANCELLED, state, results,
                    f"Cancelled by {self._cancel_requested_by} before '{step.title}'. "
                    f"Nothing more was run. The host is left: {state}.",
                )
            result = await self._run_step(step, info, established)
            results.append(result)
            if result.status is StepStatus.SUCCEEDED:
                state = step.leaves
                if step.establishes is not None:
                    established.add(step.establishes)
                self._bus.publish(StepFinished(self.run_id, info, result, state))
                continue
            state = state_after_failure(step, result, state)
            self._bus.publish(StepFinished(self.run_id, info, result, state))
            advice = f" Next: {step.if_failed}" if step.if_failed else ""
            return self._finish(
                step.failure_status, state, results,
                f"Step {info.index + 1} '{step.title}' failed: {result.error} "
                f"The host is left: {state}.{advice}",
            )
        return self._finish(
            RunStatus.SUCCEEDED, self.procedure.succeeded_state, results,
            self.procedure.succeeded_message
            or f"Rolled back to {ctx.target}: {self.procedure.succeeded_state}.",
        )

    async def _run_step(
        self, step: Step, info: StepInfo, established: set[Safeguard]
    ) -> StepResult:
        return await run_step(step, info, ctx=self._ctx, established=established,
                              run_id=self.run_id, publish=self._bus.publish)

    def _finish(
        self, status: RunStatus, state: str, results: list[StepResult], message: str
    ) -> RunOutcome:
        done = {r.key for r in results}
        skipped = [
            StepResult(key=s.key, title=s.title, status=StepStatus.SKIPPED, started_at=None,
                       finished_at=None)
            for s in self.procedure.steps if s.key not in done
        ]
        outcome = RunOutcome(
            run_id=self.run_id, status=status, host_state=state, message=message,
            steps=(*results, *skipped), checks=self._checks, from_version=self._ctx.current,
            to_version=self._ctx.target,
        )
        self._bus.publish(RunFinished(self.run_id, outcome))
        return outcome


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."


def state_after_failure(step: Step, result: StepResult, before: str) -> str:
    """The host's state once ``step`` failed: the step's own word, else what is known."""
    if step.failed_state:
        return step.failed_state
    if step.destructive and result.started_at is not None:
        return (f"uncertain: '{step.title}' failed part-way and may be half done "
                f"(before it: {before})")
    return before


async def run_step(step: Step, info: StepInfo, *, ctx: StepContext, established: set[Safeguard],
                   run_id: int, publish: Callable[[RunEvent], None]) -> StepResult:
    """Run one step on ``ctx``'s host: its safeguards, its timeout, its output as events."""
    missing = [s for s in step.requires if s not in established]
    if missing:
        # Never reached in a well-formed procedure; this is the last line of defence.
        reason = "; ".join(s.value for s in missing)
        log.error("safeguard missing before %s: %s", step.key, reason)
        return StepResult(
            key=step.key, title=step.title, status=StepStatus.FAILED, started_at=None,
            finished_at=None, error=f"Refused to run: safeguard not met ({reason}).",
            host=info.host,
        )
    tail: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)

    def emit(line: str) -> None:
        # Output leaves rollbot (Slack thread, terminal, failure tail): a tool that echoes
        # its connection URL must not put the password there.
        line = redact(line)
        tail.append(line)
        publish(OutputLine(run_id, step.key, line, host=info.host))

    ctx.emit = emit
    started = datetime.now(UTC)
    publish(StepStarted(run_id, info))
    status, summary, error = StepStatus.SUCCEEDED, "", ""
    try:
        summary = await asyncio.wait_for(step.action(ctx), timeout=step.timeout_s)
    except RollbotError as exc:
        status, error = StepStatus.FAILED, _sentence(str(exc))
        out = getattr(exc, "output_tail", "")
        if out and not tail:
            tail.extend(out.splitlines())
    except TimeoutError:
        status = StepStatus.FAILED
        error = f"it did not finish within its {step.timeout_s:g} s timeout and was stopped."
    except Exception:
        ref = secrets.token_hex(3)
        log.exception("step %s failed unexpectedly (ref %s)", step.key, ref)
        status, error = StepStatus.FAILED, f"unexpected internal error (ref {ref}, see log)."
    return StepResult(
        key=step.key, title=step.title, status=status, started_at=started,
        finished_at=datetime.now(UTC), summary=redact(summary),
        output_tail=redact("\n".join(tail)), error=redact(error), host=info.host,
    )
