"""The domain values of a rollback: requests, runs, steps, results. Frozen, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from bot.versions import Version


class ProcedureName(StrEnum):
    """A procedure's key; what each is called is in its module under bot/procedures/."""

    SIMPLE = "simple"
    MIGRATIONS = "migrations"
    RESTORE = "restore"
    EMERGENCY = "emergency"
    PUT_BACK = "put_back"


class RunStatus(StrEnum):
    PREFLIGHT = "preflight"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REFUSED = "refused"                          # pre-flight said no; nothing changed
    RESTORE_RECOMMENDED = "restore_recommended"  # emergency ran, service still unhealthy
    INTERRUPTED = "interrupted"                  # rollbot itself died mid-run


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class RollbackRequest:
    """What a person asked for. ``target=None`` means "the previous version"."""

    environment: str
    procedure: ProcedureName
    target: Version | None
    requested_by: str
    reason: str = ""
    backup: str | None = None  # restore: file name inside backups_dir; None = newest
    approved_by: tuple[str, ...] = ()
    pinned: Pinned | None = None  # what the card (or the CLI's plan) showed and was approved


@dataclass(frozen=True)
class Pinned:
    """What pre-flight resolved when the card was shown: the run must find exactly this again."""

    target: str
    backup: Backup | None = None  # restore only: the file, its size and mtime as shown
    migrations: tuple[str, ...] = ()  # migrations only: what migrate_down was shown to undo


@dataclass(frozen=True)
class CommandResult:
    command: str
    exit_status: int | None
    output: str          # stdout+stderr interleaved, capped to the tail
    truncated: bool
    duration_s: float


@dataclass(frozen=True)
class HealthPoll:
    """The end of polling a health URL."""

    ok: bool
    status: int | None
    detail: str
    attempts: int
    elapsed_s: float


@dataclass(frozen=True)
class ImageTag:
    repository: str
    tag: str
    version: Version | None
    created: datetime
    image_id: str


@dataclass(frozen=True)
class ContainerState:
    name: str
    service: str
    image: str
    state: str    # running, exited, restarting…
    status: str   # human text, e.g. "Up 3 minutes"
    project: str = ""  # its com.docker.compose.project label; "" when not known

    @property
    def up(self) -> bool:
        return self.state == "running"


@dataclass(frozen=True)
class Backup:
    name: str
    path: str
    size: int
    modified: datetime

    @property
    def is_safety_backup(self) -> bool:
        return "_pre-restore_" in self.name


@dataclass(frozen=True)
class Check:
    """One pre-flight result, with the reason a person can read."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class StepResult:
    key: str
    title: str
    status: StepStatus
    started_at: datetime | None
    finished_at: datetime | None
    summary: str = ""
    output_tail: str = ""
    error: str = ""
    host: str = ""  # the fleet host it ran on; "" in a one-host environment

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class HostOutcome:
    """Where one fleet host ended: what it runs, and the state a person reads."""

    name: str
    status: RunStatus   # SUCCEEDED, FAILED, CANCELLED (stopped by the rollout), ...
    state: str          # "runs v1.2.2, healthy, all services up" / "untouched: still runs v1.2.3"
    version: str | None  # the version it runs or its compose file names; None when unknown
    touched: bool = True  # False: nothing was run on it


@dataclass(frozen=True)
class RunOutcome:
    run_id: int
    status: RunStatus
    host_state: str
    message: str
    steps: tuple[StepResult, ...] = ()
    checks: tuple[Check, ...] = ()
    from_version: str | None = None
    to_version: str | None = None
    hosts: tuple[HostOutcome, ...] = ()  # a fleet's hosts; () for one host


@dataclass(frozen=True)
class RunRecord:
    """A run as the store keeps it."""

    id: int
    environment: str
    procedure: ProcedureName
    status: RunStatus
    requested_by: str
    reason: str
    from_version: str | None
    to_version: str | None
    backup: str | None
    created_at: datetime
    finished_at: datetime | None
    host_state: str
    message: str
    steps: tuple[StepResult, ...] = field(default=())
    live_message_url: str | None = None  # the permalink of its live message in Slack, if any

    @property
    def duration_s(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.created_at).total_seconds()


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    run_id: int | None
    environment: str
    actor: str
    kind: str       # command | refusal | run | plan
    host: str
    command: str
    exit_status: int | None
    detail: str


class Tier(StrEnum):
    """The spec's verification tiers, run at +5, +30 and +120 minutes by default."""

    IMMEDIATE = "immediate"
    EXTENDED = "extended"
    COMPREHENSIVE = "comprehensive"


@dataclass(frozen=True)
class VerificationItem:
    """One thing a verification check looked at."""

    name: str
    ok: bool
    detail: str
    duration_s: float = 0.0
    hosts: tuple[str, ...] = ()  # the fleet hosts it found bad; () for one host or all good


@dataclass(frozen=True)
class VerificationResult:
    """One scheduled check of a run, as it ran."""

    run_id: int
    tier: Tier
    due_at: datetime
    ran_at: datetime
    late_s: float
    items: tuple[VerificationItem, ...]

    @property
    def ok(self) -> bool:
        return all(i.ok for i in self.items)


@dataclass(frozen=True)
class Verdict:
    """A person's Healthy / Regressed answer to a verification check, from the dashboards."""

    run_id: int
    tier: Tier
    verdict: str                   # healthy | regressed
    by: str
    at: datetime
    check_due_at: datetime | None  # None: an on-demand check outside the schedule
