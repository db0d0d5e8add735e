"""The live message of a run: one Slack message edited as steps start and end, output in thread."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from bot.events import OutputLine, RunEvent, RunFinished, RunStarted, StepFinished, StepStarted
from bot.model import StepStatus
from handlers.blocks.run import LiveState, live_message, step_output
from handlers.slack_writer import SlackMessage, SlackWriter

log = logging.getLogger(__name__)

_TAIL_LINES = 40
_TICK_S = 5.0  # refresh the running step's elapsed time even when nothing else happens


class LiveRun:
    """An engine observer that renders the run into Slack through a ``SlackWriter``."""

    def __init__(self, *, writer: SlackWriter, message: SlackMessage, state: LiveState,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._writer = writer
        self._message = message
        self.state = state
        self._now = now
        self._outputs: dict[int, tuple[SlackMessage, list[str]]] = {}
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
            self._finish_output(i, event.result.status)
        elif isinstance(event, RunFinished):
            s.outcome = event.outcome
            s.host_state = event.outcome.host_state
            for r_index, result in enumerate(event.outcome.steps):
                s.status.setdefault(r_index, result.status)
                if result.status is StepStatus.SKIPPED:
                    s.status[r_index] = StepStatus.SKIPPED
            if self._ticker is not None:
                self._ticker.cancel()
        self.render()

    def note_cancel_requested(self, by: str) -> None:
        self.state.cancel_requested_by = by
        self.render()

    def _output(self, event: OutputLine) -> None:
        index = next((s.index for s in self.state.steps if s.key == event.step_key), None)
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
