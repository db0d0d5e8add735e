"""The engine runs steps in order, stops at the first failure and says what state the host is in."""

import asyncio
from typing import Any

from bot.engine import Run
from bot.errors import CommandFailed
from bot.events import OutputLine, RunEvent, RunFinished, RunStarted, StepFinished
from bot.model import ProcedureName, RollbackRequest, RunStatus, StepStatus
from bot.procedures.base import Procedure, RunFacts, Safeguard, Step, StepAction, StepContext

REQUEST = RollbackRequest(environment="production", procedure=ProcedureName.SIMPLE, target=None,
                          requested_by="alice")


def _ctx() -> StepContext:
    none: Any = None
    return StepContext(host=none, docker=none, probe=none, env=none, current="v1.2.3",
                       target="v1.2.2", facts=RunFacts(), emit=lambda _l: None)


def _ok(log: list[str], name: str) -> StepAction:
    async def action(ctx: StepContext) -> str:
        log.append(name)
        ctx.emit(f"{name} says hello")
        return f"{name} done"
    return action


def _fail(log: list[str], name: str) -> StepAction:
    async def action(ctx: StepContext) -> str:
        log.append(name)
        raise CommandFailed("`docker-compose up -d` on prod exited with status 1",
                            exit_status=1, output_tail="ERROR: no such image")
    return action


def _step(key: str, action: StepAction, **kw: Any) -> Step:
    return Step(key=key, title=key.title(), action=action, shows=(f"run {key}",),
                leaves=f"after {key}", timeout_s=kw.pop("timeout_s", 5), **kw)


def _procedure(*steps: Step) -> Procedure:
    return Procedure(name=ProcedureName.SIMPLE, title="t", initial_state="untouched",
                     steps=steps, succeeded_state="all good")


async def _execute(procedure: Procedure, observers: list[Any] | None = None,
                   cancel_after: str | None = None) -> tuple[Any, list[RunEvent]]:
    events: list[RunEvent] = []

    async def record(e: RunEvent) -> None:
        events.append(e)

    run = Run(run_id=7, request=REQUEST, procedure=procedure, context=_ctx(), checks=(),
              observers=[record, *(observers or [])])
    if cancel_after:
        original = procedure.steps
        idx = [s.key for s in original].index(cancel_after)
        wrapped = original[idx].action

        async def then_cancel(ctx: StepContext) -> str:
            out = await wrapped(ctx)
            run.cancel("bob")
            return out
        run.procedure = _procedure(*original[:idx],
                                   Step(**{**original[idx].__dict__, "action": then_cancel}),
                                   *original[idx + 1:])
    outcome = await run.execute()
    return outcome, events


async def test_steps_run_in_order_and_events_tell_the_story() -> None:
    log: list[str] = []
    outcome, events = await _execute(_procedure(*(_step(k, _ok(log, k)) for k in "abc")))
    assert log == ["a", "b", "c"]
    assert outcome.status is RunStatus.SUCCEEDED
    assert outcome.host_state == "all good"
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["RunStarted"] + ["StepStarted", "OutputLine", "StepFinished"] * 3 + [
        "RunFinished"]
    assert isinstance(events[0], RunStarted) and [s.key for s in events[0].steps] == list("abc")
    finished = [e for e in events if isinstance(e, StepFinished)]
    assert [e.host_state for e in finished] == ["after a", "after b", "after c"]
    assert all(e.result.duration_s is not None for e in finished)
    assert next(e.line for e in events if isinstance(e, OutputLine)) == "a says hello"


async def test_first_failure_stops_and_names_the_state_left() -> None:
    log: list[str] = []
    steps = (_step("stop", _ok(log, "stop"), destructive=True),
             _step("start", _fail(log, "start"), destructive=True, if_failed="run emergency."),
             _step("health", _ok(log, "health")))
    outcome, events = await _execute(_procedure(*steps))
    assert log == ["stop", "start"]
    assert outcome.status is RunStatus.FAILED
    assert outcome.host_state == (
        "uncertain: 'Start' failed part-way and may be half done (before it: after stop)")
    assert "Step 2 'Start' failed" in outcome.message and "Next: run emergency." in outcome.message
    assert [s.status for s in outcome.steps] == [StepStatus.SUCCEEDED, StepStatus.FAILED,
                                                 StepStatus.SKIPPED]
    assert outcome.steps[1].output_tail == "ERROR: no such image"
    assert isinstance(events[-1], RunFinished)


async def test_a_step_past_its_timeout_fails_the_run() -> None:
    async def hang(ctx: StepContext) -> str:
        await asyncio.sleep(10)
        return "never"
    outcome, _ = await _execute(_procedure(_step("hang", hang, timeout_s=0.05)))
    assert outcome.status is RunStatus.FAILED
    assert "did not finish within its 0.05 s timeout and was stopped" in outcome.message


async def test_cancel_stops_between_steps() -> None:
    log: list[str] = []
    steps = tuple(_step(k, _ok(log, k)) for k in ("one", "two", "three"))
    outcome, _ = await _execute(_procedure(*steps), cancel_after="one")
    assert log == ["one"]
    assert outcome.status is RunStatus.CANCELLED
    assert outcome.host_state == "after one"
    assert "Cancelled by bob before 'Two'" in outcome.message


async def test_destructive_step_without_its_safeguard_never_runs() -> None:
    log: list[str] = []
    steps = (_step("verify", _ok(log, "verify")),  # forgot to establish the safeguard
             _step("drop", _ok(log, "drop"), destructive=True,
                   requires=(Safeguard.BACKUP_VERIFIED,)))
    outcome, _ = await _execute(_procedure(*steps))
    assert log == ["verify"]
    assert outcome.status is RunStatus.FAILED
    assert "safeguard not met" in outcome.message


async def test_safeguard_established_lets_the_step_run() -> None:
    log: list[str] = []
    steps = (_step("verify", _ok(log, "verify"), establishes=Safeguard.BACKUP_VERIFIED),
             _step("drop", _ok(log, "drop"), requires=(Safeguard.BACKUP_VERIFIED,)))
    outcome, _ = await _execute(_procedure(*steps))
    assert log == ["verify", "drop"] and outcome.status is RunStatus.SUCCEEDED


async def test_a_broken_observer_never_stops_the_run() -> None:
    async def broken(_e: RunEvent) -> None:
        raise RuntimeError("slack is down")
    log: list[str] = []
    outcome, events = await _execute(_procedure(_step("a", _ok(log, "a"))), observers=[broken])
    assert outcome.status is RunStatus.SUCCEEDED
    assert isinstance(events[-1], RunFinished)


async def test_unexpected_errors_get_a_reference_not_a_traceback() -> None:
    async def boom(ctx: StepContext) -> str:
        raise KeyError("x")
    outcome, _ = await _execute(_procedure(_step("boom", boom)))
    assert "unexpected internal error (ref " in outcome.message
    assert "KeyError" not in outcome.message
