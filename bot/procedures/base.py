"""What a procedure is: its title, its inputs, and its ordered steps with their safeguards."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum

from bot.config import EnvironmentConfig
from bot.model import Backup, ProcedureName, RunStatus
from bot.ports import DockerFacts, HttpProbe, LineSink, RemoteHost


@dataclass(frozen=True)
class ProcedureTitle:
    """What a procedure is called: one per procedure module, read by everyone via catalog.TITLES."""

    name: ProcedureName
    words: str  # how a sentence names it: "simple service rollback"
    note: str = ""  # what sets it apart, in brackets after the words: "no data changes"
    number: int | None = None  # the spec's "Procedure N"; None for rollbot's own put-back
    spec_heading: str = ""  # the spec's heading, capitalised as the spec writes it
    use_when: str = ""  # the spec's "Use when" line

    @property
    def title(self) -> str:
        """The run's title: "Simple service rollback (no data changes)"."""
        named = self.words[:1].upper() + self.words[1:]
        return f"{named} ({self.note})" if self.note else named

    @property
    def heading(self) -> str:
        """The spec's heading with its number: "Procedure 1: Simple Service Rollback (…)"."""
        if self.number is None:
            return self.title
        return f"Procedure {self.number}: {self.spec_heading}"

    @property
    def reference(self) -> str:
        """The name in running text: "Procedure 1, simple service rollback"."""
        return self.words if self.number is None else f"Procedure {self.number}, {self.words}"


@dataclass(frozen=True)
class ProcedureInputs:
    """Everything decided before the first step: versions, backup, the moment of the run."""

    env: EnvironmentConfig
    current: str
    target: str
    epoch: int
    backup: Backup | None = None


class Safeguard(StrEnum):
    """Facts a destructive step needs established by earlier steps of the same run."""

    BACKUP_VERIFIED = "the backup passed its integrity check"
    SAFETY_BACKUP_WRITTEN = "a non-empty pre-restore safety backup was written"


@dataclass
class RunFacts:
    """What earlier steps learned, for later steps and for the report."""

    row_counts: dict[str, int] = field(default_factory=dict)
    newest_migration_before: str = ""
    newest_migration_after: str = ""
    migrations_before: list[str] = field(default_factory=list)  # newest first, before any down
    migrations_undone: list[str] = field(default_factory=list)
    safety_backup: str = ""
    compose_backup: str = ""
    env_file_backup: str = ""  # the .env copy, when a ${VAR} tag was switched there


@dataclass
class StepContext:
    """Everything a step may touch. Built once per run."""

    host: RemoteHost
    docker: DockerFacts
    probe: HttpProbe
    env: EnvironmentConfig
    current: str
    target: str
    facts: RunFacts
    emit: LineSink


StepAction = Callable[[StepContext], Awaitable[str]]


@dataclass(frozen=True)
class Step:
    """One named step. ``leaves`` is the host's state once it has succeeded."""

    key: str
    title: str
    action: StepAction
    shows: tuple[str, ...]
    leaves: str
    timeout_s: float
    destructive: bool = False
    establishes: Safeguard | None = None
    requires: tuple[Safeguard, ...] = ()
    if_failed: str = ""
    failed_state: str = ""  # the host's state when this step fails, where it is known
    failure_status: RunStatus = RunStatus.FAILED


@dataclass(frozen=True)
class Procedure:
    name: ProcedureName
    title: str
    initial_state: str
    steps: tuple[Step, ...]
    succeeded_state: str
    succeeded_message: str = ""  # the outcome's sentence on success; default "Rolled back to …"
