"""The live message of a run: one Slack message edited as steps start and end, output in thread."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from bot.events import (
    OutputLine,
    RunEvent,
    RunFinished,
    RunStarted,
    StepFinished,
    StepInfo,
    StepStarted,
)
from bot.model import StepStatus
from handlers.blocks.fleet import host_output
from handlers.blocks.run import LiveState, live_message, step_output
from handlers.slack_writer import SlackMessage, SlackWriter

log = logging.getLogger(__name__)

# Where a run's live message is: (run id, channel, ts).
Linked = Callable[[int, str, str], None]

_TAIL_LINES = 40
_TICK_S = 5.0  # refresh the running step's elapsed time even when nothing else happens


class LiveRun:
    """An engine observer that renders the run into Slack through a ``SlackWriter``."""

    def __init__(self, *, writer: SlackWriter, message: SlackMessage, state: LiveState,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 on_linked: Linked | None = None) -> None:
        self._writer = writer
        self._message = message
        self.state = state
        self._now = now
        self._on_linked = on_linked
        self._linked = False
        # Thread messages of command output: one per step, or in a fleet one per host.
        self._outputs: dict[int | str, tuple[SlackMessage, list[str]]] = {}
        self._host_step: dict[str, StepInfo] = {}  # a fleet host's step now (or last)
        self._ticker: asyncio.Task[None] | None = None

    def render(self) -> None:
        try:
            blocks = live_message(self.state, now=self._now())
        except Exception:  # a rendering bug must never stop a rollback
            log.exception("rendering the live message of run #%s failed", self.state.run_id)
            return
        head = blocks[0]["text"]["text"]
        self._writer.set(self._message, text=head, blocks=blocks)

    async def __call__(self, event: RunEvent) -> None:
        s = self.state
        s.board.apply(event, now=self._now())
        if s.board.is_fleet and isinstance(event, OutputLine | StepStarted | StepFinished):
            self._fleet_step(event)
        if isinstance(event, RunStarted):
            s.steps = list(event.steps)
            s.from_version, s.to_version = event.from_version, event.to_version
            self._ticker = asyncio.create_task(self._tick())
        elif isinstance(event, StepStarted):
            s.status[event.step.index] = StepStatus.RUNNING
            s.began[event.step.index] = self._now()
        elif isinstance(event, OutputLine):
            self._output(event)
            return
        elif isinstance(event, StepFinished):
            i = event.step.index
            s.status[i] = event.result.status
            if event.result.duration_s is not None:
                s.took[i] = event.result.duration_s
            s.host_state = event.host_state if event.result.status is StepStatus.FAILED else ""
            if event.result.status is StepStatus.FAILED:
                s.failure = f"step {i + 1} '{event.result.title}': {event.result.error}"
                s.failure_tail = event.result.output_tail
            if not s.board.is_fleet:
                self._finish_output(i, event.result.status)
        elif isinstance(event, RunFinished):
            s.outcome = event.outcome
            s.host_state = event.outcome.host_state
            self._mark_unreached(event)
            if self._ticker is not None:
                self._ticker.cancel()
        self.render()
        self._link()

    def _link(self) -> None:
        """Tell ``on_linked`` once where the run's message is: its id and its ts both known.

        A new message gets its ts when the writer first posts it, a moment after the run began;
        the events that follow (or the run's end) find it then.
        """
        if self._linked or self._on_linked is None:
            return
        if self.state.run_id <= 0 or self._message.ts is None:
            return
        self._linked = True
        self._on_linked(self.state.run_id, self._message.channel, self._message.ts)

    def _mark_unreached(self, event: RunFinished) -> None:
        """Steps the run never reached show as skipped (matched by key, and host in a fleet)."""
        s = self.state
        if not s.board.is_fleet:
            for r_index, result in enumerate(event.outcome.steps):
                s.status.setdefault(r_index, result.status)
                if result.status is StepStatus.SKIPPED:
                    s.status[r_index] = StepStatus.SKIPPED
            return
        where = {(step.host, step.key): step.index for step in s.steps}
        for result in event.outcome.steps:
            index = where.get((result.host, result.key))
            if index is not None and index not in s.status:
                s.status[index] = result.status

    def _fleet_step(self, event: OutputLine | StepStarted | StepFinished) -> None:
        """A fleet host's output goes to that host's thread message, its steps marked in it."""
        if isinstance(event, OutputLine):
            if event.host in self._host_step:
                self._host_output(event.host, event.line)
            return
        step = event.step
        if not step.host:
            return
        self._host_step[step.host] = step
        if isinstance(event, StepStarted):
            if step.host in self._outputs:
                self._host_output(step.host, f"── {step.title}")
        elif step.host in self._outputs:
            self._set_host_output(step.host, event.result.status)

    def _host_output(self, host: str, line: str) -> None:
        if host not in self._outputs:
            msg = self._writer.message(self._message.channel, thread_ts=self._message.ts)
            self._outputs[host] = (msg, [f"── {self._host_step[host].title}"])
        lines = self._outputs[host][1]
        lines.append(line)
        del lines[:-_TAIL_LINES]
        self._set_host_output(host, None)

    def _set_host_output(self, host: str, status: StepStatus | None) -> None:
        msg, lines = self._outputs[host]
        text = host_output(host, self._host_step[host].title, lines, done=status)
        self._writer.set(msg, text=text, blocks=None)

    def close(self) -> None:
        """Stop refreshing: the run ended, or never reached its end (an error before it)."""
        if self._ticker is not None:
            self._ticker.cancel()

    def note_cancel_requested(self, by: str) -> None:
        self.state.cancel_requested_by = by
        self.render()

    def _output(self, event: OutputLine) -> None:
        if self.state.board.is_fleet and event.host:
            return  # in the host's thread message (_fleet_step)
        index = next((s.index for s in self.state.steps
                      if s.key == event.step_key and s.host == event.host), None)
        if index is None:
            return
        if index not in self._outputs:
            parent = self._message.ts
            msg = self._writer.message(self._message.channel, thread_ts=parent)
            self._outputs[index] = (msg, [])
        msg, lines = self._outputs[index]
        lines.append(event.line)
        del lines[:-_TAIL_LINES]
        self._set_output(index, None)

    def _finish_output(self, index: int, status: StepStatus) -> None:
        if index in self._outputs:
            self._set_output(index, status)

    def _set_output(self, index: int, status: StepStatus | None) -> None:
        msg, lines = self._outputs[index]
        step = self.state.steps[index]
        text = step_output(step.title, index, lines, done=status)
        self._writer.set(msg, text=text, blocks=None)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(_TICK_S)
            self.render()
