"""The rollout's rules, pure: which hosts go together, when failures stop it, what it says."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.config import FleetConfig
from bot.model import HostOutcome, RunStatus


def rollout_waves(hosts: Sequence[str], fleet: FleetConfig) -> tuple[tuple[str, ...], ...]:
    """The canary hosts alone first, then batches of ``batch_size`` (default: all the rest)."""
    canary = tuple(hosts[:fleet.canary])
    rest = list(hosts[fleet.canary:])
    size = fleet.batch_size or max(len(rest), 1)
    batches = tuple(tuple(rest[i:i + size]) for i in range(0, len(rest), size))
    return ((canary,) if canary else ()) + batches


def stops_rollout(*, failed: int, fleet: FleetConfig, strict: bool) -> bool:
    """Whether a failure stops the rollout.

    ``strict``: the canary wave, and in migrations/restore the stop and the database work
    (the database is only changed with every host stopped), where any failure stops it.
    """
    return failed > 0 and (strict or failed > fleet.max_failed_hosts)


@dataclass(frozen=True)
class FleetEnd:
    """How a rollout ended, for its status and its sentence."""

    cancelled_by: str | None   # who cancelled it, when that stopped a host
    stopped_by: str            # why a failure stopped the rollout; "" when none did
    failure_status: RunStatus  # the first failed step's status (FAILED, RESTORE_RECOMMENDED)
    max_failed_hosts: int


def fleet_status(hosts: Sequence[HostOutcome], end: FleetEnd) -> RunStatus:
    """SUCCEEDED only when every host succeeded.

    A failure that ``max_failed_hosts`` tolerated is still FAILED: that host does not run the
    target, so the environment is not restored, and the success notice, the verification
    checks and the quarantine must not run as if it were.
    """
    if all(h.status is RunStatus.SUCCEEDED for h in hosts):
        return RunStatus.SUCCEEDED
    if end.cancelled_by is not None and not any(h.status is RunStatus.FAILED for h in hosts):
        return RunStatus.CANCELLED
    return end.failure_status


def fleet_summary(hosts: Sequence[HostOutcome]) -> str:
    """Which hosts run which version, in what state: hosts in the same state share a clause."""
    groups: dict[str, list[str]] = {}
    for h in hosts:
        groups.setdefault(h.state, []).append(h.name)
    return "; ".join(f"{', '.join(names)}: {state}" for state, names in groups.items())


def fleet_message(hosts: Sequence[HostOutcome], end: FleetEnd, *, target: str) -> str:
    """The outcome's sentence: what happened to the rollout, then where every host is."""
    done = [h.name for h in hosts if h.status is RunStatus.SUCCEEDED]
    failed = [h.name for h in hosts if h.status is RunStatus.FAILED
              or h.status is RunStatus.RESTORE_RECOMMENDED]
    if len(done) == len(hosts):
        head = f"Rolled back all {len(hosts)} hosts to {target}."
    elif end.stopped_by:
        head = f"Rollout stopped: {end.stopped_by}; nothing further was started on any host."
    elif end.cancelled_by is not None:
        head = (f"Cancelled by {end.cancelled_by}: nothing further was started on any host. "
                "Resume and put-back are not offered for a fleet (each host is left as named "
                "here); ask for a fresh card to finish the rollback.")
    else:
        head = (f"Rolled back {len(done)} of {len(hosts)} hosts to {target}; {', '.join(failed)} "
                f"failed (tolerated by max_failed_hosts = {end.max_failed_hosts}), so the "
                "environment is not fully rolled back.")
    return f"{head} {fleet_summary(hosts)}."


def rollout_sentence(waves: Sequence[Sequence[str]], *, canary: int,
                     database_host: str | None) -> str:
    """How the plan and the card say the steps apply: per host, in which order."""
    parts = [", ".join(w) for w in waves]
    if canary and parts:
        parts[0] += " (canary: alone, and verified before any other host is touched)"
    order = ", then ".join(parts)
    hosts = sum(len(w) for w in waves)
    if database_host is None:
        return f"on {hosts} hosts, each through every step: {order}"
    return (f"on {hosts} hosts: every host stopped first, the database work once on "
            f"{database_host}, then started: {order}")
