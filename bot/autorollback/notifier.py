"""What the automatic rollback tells people: the notifier port, and the log notifier.

The state machine (``machine.py``) decides; a notifier only shows what was decided. Slack is one
notifier (``handlers/autorollback.py``); the log is the other, used when ``[slack]`` is not
configured, so ``rollbot serve`` without Slack still says what it watched, counted down and did.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from bot.autorollback.deploys import Deploy, DeployState
from bot.autorollback.watch import WatchResult, window_ratio
from bot.config import AutoRollbackConfig
from bot.events import Observer
from bot.model import RollbackRequest, RunOutcome, RunStatus

log = logging.getLogger(__name__)

# Where a front showed a deploy's message: opaque to the machine, kept as the deploy's front_ref.
Where = dict[str, Any]


class Notifier(Protocol):
    """Told, in order, what happens to one deploy; never decides anything."""

    async def watching(self, deploy: Deploy, config: AutoRollbackConfig) -> Where | None:
        """The watch of a deployed version began; returns where it is shown."""
        ...

    async def observed(self, deploy: Deploy, config: AutoRollbackConfig, result: WatchResult,
                       *, elapsed_s: float) -> None:
        """The watch so far; called at most once per ``interval_seconds``."""
        ...

    async def healthy(self, deploy: Deploy, config: AutoRollbackConfig, result: WatchResult,
                      *, elapsed_s: float) -> None:
        """The whole watch was green: nothing to roll back."""
        ...

    async def counting_down(self, deploy: Deploy, triggers: Sequence[str], *,
                            seconds: float) -> Where | None:
        """A trigger fired: the rollback starts by itself after ``seconds`` unless cancelled."""
        ...

    async def offered(self, deploy: Deploy, triggers: Sequence[str]) -> Where | None:
        """CI reported a failure rollbot did not see (trust_ci_failures off): a person decides."""
        ...

    async def interrupted(self, deploy: Deploy) -> None:
        """rollbot could not go on watching or counting down (``deploy.detail`` says why):
        nothing runs by itself."""
        ...

    async def taken_over(self, deploy: Deploy, *, seconds_left: float) -> Where | None:
        """The replica watching or counting down stopped; this one carries on: the watch for
        ``seconds_left``, or the countdown, which ends in ``seconds_left``. Returns where it is
        shown when it had to be shown anew (else the deploy's message is edited)."""
        ...

    async def cancelled(self, deploy: Deploy, *, by: str, offered: bool) -> None:
        """A person cancelled the countdown (or dismissed the offer); nothing was rolled back."""
        ...

    async def rolling_back(self, deploy: Deploy, request: RollbackRequest) -> Sequence[Observer]:
        """The rollback starts now; returns the observers that show its run."""
        ...

    async def rolled_back(self, deploy: Deploy, outcome: RunOutcome) -> None:
        """The run ended (succeeded, failed or refused by pre-flight)."""
        ...

    async def not_rolled_back(self, deploy: Deploy, reason: str) -> None:
        """The run could not start (another rollback holds the lock, the database failed)."""
        ...


def _by_hand(deploy: Deploy) -> str:
    return (f"to roll back by hand: rollbot rollback {deploy.previous_version} "
            f"--env {deploy.environment}")


class LogNotifier:
    """The notifier when Slack is not configured: one log line per event, INFO or WARNING."""

    async def watching(self, deploy: Deploy, config: AutoRollbackConfig) -> Where | None:
        log.info("deploy #%s: watching %s in %s (deployed over %s by %s): a check every %g s, "
                 "%d checks", deploy.id, deploy.version, deploy.environment,
                 deploy.previous_version, deploy.actor or "CI", config.interval_seconds,
                 config.planned_checks)
        return None

    async def observed(self, deploy: Deploy, config: AutoRollbackConfig, result: WatchResult,
                       *, elapsed_s: float) -> None:
        seen = result.observations
        if not seen:
            return
        last = seen[-1]
        window = window_ratio(seen, config.window_checks)
        where = f" on {', '.join(last.unhealthy)}" if last.unhealthy else ""
        log.info("deploy #%s: check %d of %d after %.0f s: %d healthy, %d not; last health %s%s, "
                 "version %s, 5xx %d of %d in the window", deploy.id, len(seen), result.planned,
                 elapsed_s, sum(1 for o in seen if o.healthy),
                 sum(1 for o in seen if not o.healthy), last.health or "no answer", where,
                 last.version or "?", window.fives, window.answers)

    async def healthy(self, deploy: Deploy, config: AutoRollbackConfig, result: WatchResult,
                      *, elapsed_s: float) -> None:
        log.info("deploy #%s: %s in %s is healthy: %d checks green over %.0f s; nothing to roll "
                 "back", deploy.id, deploy.version, deploy.environment,
                 len(result.observations), elapsed_s)

    async def counting_down(self, deploy: Deploy, triggers: Sequence[str], *,
                            seconds: float) -> Where | None:
        log.warning("deploy #%s: %s in %s is failing (%s). Countdown: rolling back to %s in "
                    "%g s", deploy.id, deploy.version, deploy.environment, "; ".join(triggers),
                    deploy.previous_version, seconds)
        return None

    async def offered(self, deploy: Deploy, triggers: Sequence[str]) -> Where | None:
        log.warning("deploy #%s: %s in %s failed to deploy (%s). Nothing rolls back by itself "
                    "(trust_ci_failures is off); %s", deploy.id, deploy.version,
                    deploy.environment, "; ".join(triggers), _by_hand(deploy))
        return None

    async def interrupted(self, deploy: Deploy) -> None:
        log.warning("deploy #%s: rollbot stopped watching or counting down for %s in %s "
                    "(%s). Nothing was rolled back; %s", deploy.id, deploy.version,
                    deploy.environment, deploy.detail or "no trigger yet", _by_hand(deploy))

    async def taken_over(self, deploy: Deploy, *, seconds_left: float) -> Where | None:
        if deploy.state is DeployState.COUNTDOWN:
            log.warning("deploy #%s: carried on after the rollbot replica counting down stopped: "
                        "rolling back %s to %s in %.0f s (the countdown's own deadline)",
                        deploy.id, deploy.environment, deploy.previous_version, seconds_left)
        else:
            log.warning("deploy #%s: carried on after the rollbot replica watching stopped: "
                        "watching %s in %s for the %.0f s left", deploy.id, deploy.version,
                        deploy.environment, seconds_left)
        return None

    async def cancelled(self, deploy: Deploy, *, by: str, offered: bool) -> None:
        what = "rollback offered for" if offered else "automatic rollback of"
        log.warning("deploy #%s: %s %s cancelled by %s; %s stays as CI left it", deploy.id, what,
                    deploy.version, by, deploy.environment)

    async def rolling_back(self, deploy: Deploy, request: RollbackRequest) -> Sequence[Observer]:
        log.warning("deploy #%s: rolling back %s from %s to %s (procedure %s, decided by %s)",
                    deploy.id, deploy.environment, deploy.version, deploy.previous_version,
                    request.procedure, deploy.decided_by or request.requested_by)
        return ()

    async def rolled_back(self, deploy: Deploy, outcome: RunOutcome) -> None:
        if outcome.status is RunStatus.SUCCEEDED:
            log.warning("deploy #%s: rolled back: %s runs %s again (run #%s); %s is quarantined",
                        deploy.id, deploy.environment, outcome.to_version, outcome.run_id,
                        outcome.from_version or deploy.version)
        else:
            log.error("deploy #%s: the automatic rollback of %s did not succeed (run #%s, %s): "
                      "%s Host state: %s", deploy.id, deploy.version, outcome.run_id,
                      outcome.status, outcome.message, outcome.host_state)

    async def not_rolled_back(self, deploy: Deploy, reason: str) -> None:
        log.error("deploy #%s: the automatic rollback of %s could not start: %s", deploy.id,
                  deploy.version, reason)
