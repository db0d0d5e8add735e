"""The fleet run: every host's lane, the canary first and verified, then batches in parallel.

One event bus for the whole run; each host has its own SSH connection and step context.
Failures and a cancel are checked before every step of every lane, so the other hosts of a
batch finish the step they are in and start nothing further.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from bot.config import FleetConfig
from bot.engine import Run
from bot.events import Observer, RunFinished, RunStarted
from bot.fleet.lanes import Lane
from bot.fleet.waves import FleetEnd, fleet_message, fleet_status, fleet_summary, stops_rollout
from bot.model import Check, RollbackRequest, RunOutcome, RunStatus


class FleetRun(Run):
    """A run whose steps are spread over a fleet's hosts (lanes) instead of one host."""

    def __init__(self, *, run_id: int, request: RollbackRequest, lanes: Sequence[Lane],
                 waves: tuple[tuple[str, ...], ...], fleet: FleetConfig,
                 database_host: str | None, checks: tuple[Check, ...], current: str,
                 observers: list[Observer]) -> None:
        first = lanes[0]
        super().__init__(run_id=run_id, request=request, procedure=first.plan.procedure,
                         context=first.ctx, checks=checks, observers=observers)
        self._lanes = {lane.name: lane for lane in lanes}
        self._waves = waves
        self._fleet = fleet
        self._database_host = database_host
        self._current = current
        self._target = first.ctx.target
        self._failure: RunStatus | None = None  # set when a failure stops the rollout
        self._stopped_by = ""                    # and why, in words

    def _halted(self) -> bool:
        return self._failure is not None or self._cancel_requested_by is not None

    async def _execute(self) -> RunOutcome:
        order = [name for wave in self._waves for name in wave]
        lanes = [self._lanes[n] for n in order]
        self._bus.publish(RunStarted(
            run_id=self.run_id, request=self.request, from_version=self._current,
            to_version=self._target, steps=tuple(i for lane in lanes for i in lane.infos),
            checks=self._checks, hosts=tuple(order)))
        if self._database_host is not None:
            # The database changes only with every host stopped: stop them all, then the
            # database work once, each a strict phase (any failure stops the rollout).
            before_db = "before the database work, which runs only with every host stopped"
            await self._phase(lanes, strict=before_db, end=lambda lane: lane.plan.stopped_end)
            db = self._lanes[self._database_host]
            await self._phase([db], strict="in the database work",
                              end=lambda lane: lane.plan.database_end)
        for n, wave in enumerate(self._waves):
            canary = "as the canary" if n == 0 and self._fleet.canary > 0 else ""
            await self._phase([self._lanes[h] for h in wave], strict=canary,
                              end=lambda lane: len(lane.plan.steps))
        return self._conclude(lanes)

    async def _phase(self, lanes: list[Lane], *, strict: str,
                     end: Callable[[Lane], int]) -> None:
        """Run the lanes side by side, each up to its ``end``; a failure may halt them all.

        ``strict`` (where any failure stops the rollout) says where the phase is, for the
        outcome's sentence; "" for a batch, stopped only past ``max_failed_hosts``.
        """
        async def lane_run(lane: Lane) -> None:
            if await lane.run_to(end(lane), run_id=self.run_id, publish=self._bus.publish,
                                 halted=self._halted):
                return
            failed = [other.name for other in self._lanes.values() if other.failed is not None]
            if self._failure is None and stops_rollout(failed=len(failed), fleet=self._fleet,
                                                       strict=bool(strict)):
                assert lane.failed is not None
                self._failure = lane.failed[0].failure_status
                self._stopped_by = (
                    f"{lane.name} failed {strict}" if strict else
                    f"{', '.join(failed)} failed, more than max_failed_hosts = "
                    f"{self._fleet.max_failed_hosts}")

        await asyncio.gather(*(lane_run(lane) for lane in lanes if lane.failed is None))

    def _conclude(self, lanes: list[Lane]) -> RunOutcome:
        hosts = tuple(lane.outcome() for lane in lanes)
        first_failure = next((lane.failed[0].failure_status for lane in lanes
                              if lane.failed is not None), RunStatus.FAILED)
        # rollbot's own reason to stop (its lock's session was lost) is named as the canceller
        cancelled_by = (f"rollbot itself ({self._stop_why.rstrip('.')})" if self._stop_why
                        else self._cancel_requested_by)
        end = FleetEnd(cancelled_by=cancelled_by,
                       stopped_by=self._stopped_by,
                       failure_status=self._failure or first_failure,
                       max_failed_hosts=self._fleet.max_failed_hosts)
        status = fleet_status(hosts, end)
        # Host after host, as the steps are numbered (the store records them by position).
        steps = [r for lane in self._lanes.values() for r in (*lane.results, *lane.skipped())]
        outcome = RunOutcome(
            run_id=self.run_id, status=status, host_state=fleet_summary(hosts),
            message=fleet_message(hosts, end, target=self._target), steps=tuple(steps),
            checks=self._checks, from_version=self._current, to_version=self._target,
            hosts=hosts)
        self._bus.publish(RunFinished(self.run_id, outcome))
        return outcome
