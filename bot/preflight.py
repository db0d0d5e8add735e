"""Pre-flight: read-only checks before any step. A failed check refuses the run."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bot import commands as cmd
from bot.config import EnvironmentConfig
from bot.errors import CommandFailed, RollbotError
from bot.host_facts import (
    age_text,
    choose_backup,
    compose_tag,
    docker_summary,
    find_tag,
    list_backups,
    previous_version,
    running_tag,
)
from bot.model import Backup, Check, ProcedureName, RollbackRequest
from bot.ports import DockerFacts, RemoteHost


@dataclass(frozen=True)
class Preflight:
    checks: tuple[Check, ...]
    current: str          # what runs now (or what the compose file names when nothing runs)
    target: str           # "" when it could not be resolved
    backup: Backup | None

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def refusal(self) -> str:
        failed = [c for c in self.checks if not c.ok]
        return " ".join(f"{c.name}: {c.detail}" for c in failed)


async def run_preflight(
    *, host: RemoteHost, docker: DockerFacts, env: EnvironmentConfig, request: RollbackRequest,
    now: datetime | None = None,
) -> Preflight:
    """Ask the host what runs, what is available and whether the backup is sound."""
    now = now or datetime.now(UTC)
    checks = [Check("Host reachable", True, f"SSH to {host.name} connected, host key verified; "
                                             f"Docker facts via {docker.via}")]
    tags, containers = await docker_summary(docker, env)
    in_file = await compose_tag(host, env)
    running = running_tag(containers, env)
    current = running or in_file
    if running is None:
        checks.append(Check("Current version", True,
                            f"no {env.service} container is running; the compose file names "
                            f"{in_file}"))
    elif running != in_file:
        checks.append(Check("Current version", True,
                            f"{env.service} runs {running}, but the compose file names {in_file}"))
    else:
        checks.append(Check("Current version", True, f"{env.service} runs {running}"))

    target = _resolve_target(request, tags, current, checks)
    if target:
        _check_target(request, target, tags, running, env, checks)
    backup = None
    if request.procedure in (ProcedureName.MIGRATIONS, ProcedureName.RESTORE):
        backup = await _check_database(host=host, env=env, request=request, now=now,
                                       checks=checks)
    return Preflight(checks=tuple(checks), current=current, target=target, backup=backup)


def _resolve_target(request: RollbackRequest, tags: list, current: str,  # type: ignore[type-arg]
                    checks: list[Check]) -> str:
    if request.target is not None:
        return str(request.target)
    previous = previous_version(tags, current)
    if previous is None:
        checks.append(Check("Target version", False,
                            f"no release image older than {current} is on the host; "
                            "name the version to roll back to"))
        return ""
    checks.append(Check("Target version", True,
                        f"previous version {previous.tag} (newest release below {current})"))
    return previous.tag


def _check_target(request: RollbackRequest, target: str, tags: list,  # type: ignore[type-arg]
                  running: str | None, env: EnvironmentConfig, checks: list[Check]) -> None:
    from bot.versions import parse_version

    found = find_tag(tags, parse_version(target))
    if found is None:
        present = ", ".join(t.tag for t in tags[:6]) or "none"
        checks.append(Check("Target image present", False,
                            f"{env.image}:{target} is not on the host (present: {present})"))
    else:
        checks.append(Check("Target image present", True,
                            f"{env.image}:{target} present, built "
                            f"{found.created:%Y-%m-%d %H:%M} UTC"))
    if running == target and request.procedure is not ProcedureName.RESTORE:
        checks.append(Check("Target differs", False,
                            f"{env.service} already runs {target}; nothing to roll back"))
    elif running == target:
        checks.append(Check("Target differs", True,
                            f"{env.service} already runs {target}: only the data is restored"))
    else:
        checks.append(Check("Target differs", True, f"{running or 'nothing'} → {target}"))


async def _check_database(*, host: RemoteHost, env: EnvironmentConfig, request: RollbackRequest,
                          now: datetime, checks: list[Check]) -> Backup | None:
    db = env.database
    if db is None:
        checks.append(Check("Database configured", False,
                            "the runbook has no [database] section for this environment"))
        return None
    if request.procedure is ProcedureName.MIGRATIONS and not db.migrate_down:
        checks.append(Check("Migration command", False,
                            "the runbook has no database.migrate_down command"))
    backups = await list_backups(host, db)
    try:
        backup = choose_backup(backups, db, request.backup)
    except RollbotError as exc:
        checks.append(Check("Backup exists", False, str(exc)))
        return None
    age = age_text(backup.modified, now)
    checks.append(Check("Backup exists", True,
                        f"{backup.name}, {backup.size / 1e6:.1f} MB, {age} "
                        f"(taken {backup.modified:%Y-%m-%d %H:%M} UTC)"))
    if request.procedure is not ProcedureName.RESTORE:
        return backup
    if now - backup.modified > timedelta(days=db.retention_days):
        checks.append(Check("Backup within retention", False,
                            f"{backup.name} is {age}, older than the {db.retention_days}-day "
                            "retention; pick a newer one (`backups`)"))
        return backup
    checks.append(Check("Backup within retention", True,
                        f"{age}, within {db.retention_days} days"))
    try:
        await host.run(cmd.verify_backup_integrity(backup.path), timeout=db.restore_timeout_s)
    except CommandFailed as exc:
        reason = exc.output_tail.strip().splitlines()[-1] if exc.output_tail.strip() else ""
        checks.append(Check("Backup integrity", False,
                            f"{backup.name} is corrupt or incomplete"
                            f"{': ' + reason[:160] if reason else ''}; it cannot be restored"))
        return backup
    checks.append(Check("Backup integrity", True,
                        f"gunzip read the whole file intact and the dump is complete; writes "
                        f"since {backup.modified:%Y-%m-%d %H:%M} UTC will be lost"))
    return backup
