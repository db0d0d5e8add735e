"""What the home tab shows, per environment: frozen values, gathered by ``reader``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bot.autorollback.deploys import DeployState, Quarantined
from bot.model import ProcedureName, RunStatus


@dataclass(frozen=True)
class RunningVersion:
    """The version last known to run, and where that knowledge comes from."""

    version: str
    seen_at: datetime
    source: str  # "seen running" (a sighting) or "rolled back to" (a run's end)


@dataclass(frozen=True)
class RunSummary:
    """A run as the dashboard lists it (the lock, or one of the last runs)."""

    id: int
    environment: str
    procedure: ProcedureName
    status: RunStatus
    requested_by: str
    from_version: str | None
    to_version: str | None
    created_at: datetime
    finished_at: datetime | None
    live_message_url: str | None

    @property
    def active(self) -> bool:
        return self.status in (RunStatus.PREFLIGHT, RunStatus.RUNNING)


@dataclass(frozen=True)
class WatchedDeploy:
    """A deploy CI announced that rollbot still watches, counts down or offers to roll back."""

    id: int
    environment: str
    version: str
    previous_version: str
    state: DeployState
    deadline: datetime | None  # the countdown's end


@dataclass(frozen=True)
class PendingCheck:
    check_id: int
    run_id: int
    tier: str
    due_at: datetime


@dataclass(frozen=True)
class EnvironmentState:
    name: str
    running: RunningVersion | None
    active_run: RunSummary | None  # the lock: a rollback running now
    deploys: tuple[WatchedDeploy, ...]
    quarantined: tuple[Quarantined, ...]
    pending_checks: tuple[PendingCheck, ...]
    last_runs: tuple[RunSummary, ...]  # newest first, at most LAST_RUNS

    @property
    def busy(self) -> bool:
        """Something here needs eyes now: a rollback, a watch or a countdown."""
        return self.active_run is not None or bool(self.deploys)


@dataclass(frozen=True)
class Dashboard:
    environments: tuple[EnvironmentState, ...]  # the runbook's order, busy ones first
    default_environment: str
    read_at: datetime


LAST_RUNS = 5
OPEN_DEPLOY_STATES = (DeployState.WATCHING, DeployState.COUNTDOWN, DeployState.OFFERED,
                      DeployState.ROLLING_BACK)
