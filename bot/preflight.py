"""Pre-flight: read-only checks before any step. A failed check refuses the run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bot.autorollback.deploys import Quarantined
from bot.config import DatabaseConfig, EnvironmentConfig
from bot.edges.host_facts import (
    age_text,
    all_run,
    choose_backup,
    docker_summary,
    images_tags,
    list_backups,
    newest_migrations,
    previous_release,
    running_tag,
    running_text,
    skipped_text,
    target_images_check,
)
from bot.errors import CommandFailed, HostError, RollbotError
from bot.model import Backup, Check, ContainerState, ProcedureName, RollbackRequest
from bot.pinning import pin_checks
from bot.ports import DockerFacts, HttpProbe, RemoteHost
from bot.preflight_deadline import checking
from bot.prerequisites import (
    compose_naming,
    compose_resolves_check,
    database_checks,
    migrate_status_check,
    version_endpoint_check,
)
from bot.procedures import commands as cmd
from bot.procedures.project_name import SHELL_VARIABLES, naming_from_command
from bot.procedures.release_files import read_release, shell_variables, tag_variables_verdict
from bot.versions import try_parse_version

# "Newest backup" tests at most this many candidates (each test reads the whole file).
_MAX_BACKUP_CANDIDATES = 5


@dataclass(frozen=True)
class Preflight:
    checks: tuple[Check, ...]
    current: str          # what runs now; what the compose file names when nothing runs or a
                          # deploy did not finish (the file names a higher release)
    target: str           # "" when it could not be resolved
    backup: Backup | None
    migrations: tuple[str, ...] = ()  # migrations procedure: what migrate_down will undo

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def refusal(self) -> str:
        failed = [c for c in self.checks if not c.ok]
        return " ".join(f"{c.name}: {c.detail}" for c in failed)


async def run_preflight(
    *, host: RemoteHost, docker: DockerFacts, env: EnvironmentConfig, request: RollbackRequest,
    now: datetime | None = None, quarantined: Sequence[Quarantined] = (),
    probe: HttpProbe | None = None, database: bool = True,
) -> Preflight:
    """Ask the host what runs, what is available and whether the backup is sound.

    ``quarantined`` are the environment's quarantined versions: "previous" skips them.
    ``probe`` asks the version endpoint (without it, that check is left out).
    ``database=False``: a fleet host that is not the database's; its database checks run once,
    on the host that does the database work.
    """
    now = now or datetime.now(UTC)
    checks = [Check("Host reachable", True, f"SSH to {host.name} connected, host key verified; "
                                             f"Docker facts via {docker.via}")]
    checking("Current version", host.name)
    tags, containers = await docker_summary(docker, env)
    release = await read_release(host, env)
    in_file = release.tag
    running = running_tag(containers, env)
    current = current_version(running=running, in_file=in_file)
    unfinished = unfinished_deploy(running=running, in_file=in_file)
    if running is None:
        checks.append(Check("Current version", True,
                            f"no {env.service} container is running; the compose file names "
                            f"{release.describe()}"))
    elif unfinished:
        # The spec's CI order: the tag is written, then migrations run; they failed, so the old
        # containers still serve. The version to roll back from is the one the file names.
        checks.append(Check("Current version", True,
                            f"{running} still runs; the compose file already names {in_file} "
                            "(a deploy that did not finish)"))
    elif running != in_file:
        checks.append(Check("Current version", True,
                            f"{running_text(containers, env)}, but the compose file names "
                            f"{release.describe()}"))
    else:
        checks.append(Check("Current version", True, running_text(containers, env)))
    checking("Image tag variable", host.name)
    # One command asks the shell about the tag variables and what names the compose project.
    asked = release.variables + (SHELL_VARIABLES if naming_from_command(env.compose) is None
                                 else ())
    in_shell = await shell_variables(host, asked)
    variables = tag_variables_verdict(host.name, release, in_shell)
    if variables is not None:
        checks.append(variables)
    checking("Compose project", host.name)
    naming = await compose_naming(host=host, env=env, release=release, in_shell=in_shell)
    checks.append(await compose_resolves_check(host=host, env=env, naming=naming,
                                               containers=containers,
                                               api_sees_service=running is not None))
    if probe is not None:
        checking("Version endpoint", host.name)
        checks.append(await version_endpoint_check(probe=probe, env=env, host_name=host.name,
                                                   service_runs=running is not None,
                                                   procedure=request.procedure))

    target = _resolve_target(request, tags, current, checks, quarantined)
    if target:
        images = await images_tags(docker, env, known={env.image: tags})
        checks.append(target_images_check(images, target))
        _check_target(request, target, containers, running, env, checks,
                      unfinished_from=in_file if unfinished else None)
    backup = None
    migrations: tuple[str, ...] = ()
    if database and request.procedure in (ProcedureName.MIGRATIONS, ProcedureName.RESTORE):
        backup = await _check_database(host=host, env=env, request=request, now=now,
                                       checks=checks)
    if database and request.procedure is ProcedureName.MIGRATIONS and env.database is not None:
        migrations = await _check_migrations(host=host, env=env, db=env.database,
                                             checks=checks)
    checks.extend(pin_checks(request.pinned, target=target, backup=backup,
                             migrations=migrations))
    return Preflight(checks=tuple(checks), current=current, target=target, backup=backup,
                     migrations=migrations)


def _resolve_target(request: RollbackRequest, tags: list, current: str,  # type: ignore[type-arg]
                    checks: list[Check], quarantined: Sequence[Quarantined]) -> str:
    if request.target is not None:
        named = next((q for q in quarantined if q.version == str(request.target)), None)
        if named is not None:
            checks.append(Check("Target quarantined", True,
                                f"{named.version} was quarantined by {named.by} on "
                                f"{named.at:%Y-%m-%d %H:%M} UTC ({named.reason or 'no reason'}"
                                "); you named it, so it is the target"))
        return str(request.target)
    previous, skipped = previous_release(tags, current, quarantined)
    why = f"; {skipped_text(skipped)}" if skipped else ""
    if previous is None:
        checks.append(Check("Target version", False,
                            f"no release image older than {current} is on the host{why}; "
                            "name the version to roll back to"))
        return ""
    checks.append(Check("Target version", True,
                        f"previous version {previous.tag} (newest release below {current}"
                        f"{' that is not quarantined' if skipped else ''}){why}"))
    return previous.tag


async def changed_since_preflight(host: RemoteHost, docker: DockerFacts, env: EnvironmentConfig,
                                  pre: Preflight) -> str:
    """What moved on the host between pre-flight's reads and taking the lock; "" if nothing."""
    containers = await docker.compose_containers(env.compose)
    now = current_version(running=running_tag(containers, env),
                          in_file=(await read_release(host, env)).tag)
    if now == pre.current:
        return ""
    return (f"production changed while pre-flight ran: it was {pre.current}, it is now {now} "
            "(another rollback or deploy?). Look again (`plan`, or a new card) before rolling "
            "back.")


def unfinished_deploy(*, running: str | None, in_file: str) -> bool:
    """The compose file names a higher release than the one still running: a deploy stopped."""
    now, named = try_parse_version(running or ""), try_parse_version(in_file)
    return now is not None and named is not None and named > now


def current_version(*, running: str | None, in_file: str) -> str:
    """The version a rollback starts from: what runs, or what the file names when nothing runs
    or a deploy did not finish (the spec's CI order writes the tag, then migrates)."""
    if running is None or unfinished_deploy(running=running, in_file=in_file):
        return in_file
    return running


def _check_target(request: RollbackRequest, target: str, containers: list[ContainerState],
                  running: str | None, env: EnvironmentConfig, checks: list[Check], *,
                  unfinished_from: str | None = None) -> None:
    every = all_run(containers, env, target)
    one = len(env.services) == 1
    # "api runs v1.2.3" is the one-service sentence; a release names each service.
    already = f"{env.service} already runs {target}" if one else running_text(containers, env)
    if unfinished_from is not None:
        if target == unfinished_from:
            checks.append(Check("Target differs", False,
                                f"the compose file already names {target}; roll back to the "
                                f"version that still runs ({running}) or an older one"))
        else:
            # Converging: the file goes back to the target, and the services restart on it.
            checks.append(Check("Target differs", True,
                                f"{unfinished_from} (compose file) → {target}; {running} runs "
                                "until the services are stopped"))
    elif every and request.procedure is not ProcedureName.RESTORE:
        checks.append(Check("Target differs", False, f"{already}; nothing to roll back"))
    elif every:
        checks.append(Check("Target differs", True, f"{already}: only the data is restored"))
    elif one:
        checks.append(Check("Target differs", True, f"{running or 'nothing'} → {target}"))
    else:
        checks.append(Check("Target differs", True,
                            f"{running_text(containers, env)} → {target}"))


async def _check_database(*, host: RemoteHost, env: EnvironmentConfig, request: RollbackRequest,
                          now: datetime, checks: list[Check]) -> Backup | None:
    db = env.database
    if db is None:
        checks.append(Check("Database configured", False,
                            "the runbook has no [database] section for this environment"))
        return None
    await database_checks(host=host, env=env, db=db, procedure=request.procedure, checks=checks)
    if request.procedure is ProcedureName.MIGRATIONS and not db.migrate_down:
        checks.append(Check("Migration command", False,
                            "the runbook has no database.migrate_down command"))
    checking("Backup exists", host.name)
    backups = await list_backups(host, db)
    try:
        backup = choose_backup(backups, db, request.backup)
    except RollbotError as exc:
        checks.append(Check("Backup exists", False, str(exc)))
        return None
    if request.procedure is not ProcedureName.RESTORE:
        checks.append(_backup_exists(backup, now))
        return backup
    if request.backup is None:
        return await _newest_sound_backup(host=host, db=db, backups=backups, newest=backup,
                                          now=now, checks=checks)
    checks.append(_backup_exists(backup, now))
    if not _within_retention(backup, db, now, checks):
        return backup
    problem = await _integrity_problem(host, db, backup)
    _integrity_check(backup, problem, checks)
    return backup


def _backup_exists(backup: Backup, now: datetime) -> Check:
    return Check("Backup exists", True,
                 f"{backup.name}, {backup.size / 1e6:.1f} MB, {age_text(backup.modified, now)} "
                 f"(taken {backup.modified:%Y-%m-%d %H:%M} UTC)")


def _within_retention(backup: Backup, db: DatabaseConfig, now: datetime,
                      checks: list[Check]) -> bool:
    age = age_text(backup.modified, now)
    if now - backup.modified > timedelta(days=db.retention_days):
        checks.append(Check("Backup within retention", False,
                            f"{backup.name} is {age}, older than the {db.retention_days}-day "
                            "retention; pick a newer one (`backups`)"))
        return False
    checks.append(Check("Backup within retention", True,
                        f"{age}, within {db.retention_days} days"))
    return True


async def _integrity_problem(host: RemoteHost, db: DatabaseConfig, backup: Backup) -> str | None:
    """None when the backup decompresses intact and ends with pg_dump's trailer; else why not."""
    checking("Backup integrity", host.name)
    try:
        await host.run(cmd.verify_backup_integrity(backup.path), timeout=db.restore_timeout_s)
    except CommandFailed as exc:
        # The check's own last line says which test failed (gzip, or pg_dump's trailer).
        tail = exc.output_tail.strip()
        return tail.splitlines()[-1][:160] if tail else "the integrity check failed"
    return None


def _integrity_check(backup: Backup, problem: str | None, checks: list[Check]) -> None:
    if problem is not None:
        checks.append(Check("Backup integrity", False,
                            f"{backup.name} is corrupt or incomplete ({problem}); it cannot be "
                            "restored"))
        return
    checks.append(Check("Backup integrity", True,
                        f"gunzip read the whole file intact and the dump is complete; writes "
                        f"since {backup.modified:%Y-%m-%d %H:%M} UTC will be lost"))


async def _newest_sound_backup(*, host: RemoteHost, db: DatabaseConfig, backups: list[Backup],
                               newest: Backup, now: datetime, checks: list[Check]
                               ) -> Backup | None:
    """"Newest backup": the newest that passes the integrity checks; says what it skipped."""
    regular = [b for b in backups if not b.is_safety_backup]
    recent = [b for b in regular if now - b.modified <= timedelta(days=db.retention_days)]
    if not recent:
        checks.append(_backup_exists(newest, now))
        _within_retention(newest, db, now, checks)
        return newest
    skipped: list[str] = []
    for backup in recent[:_MAX_BACKUP_CANDIDATES]:
        problem = await _integrity_problem(host, db, backup)
        if problem is None:
            checks.append(_backup_exists(backup, now))
            if skipped:
                checks.append(Check("Skipped backups", True,
                                    "newer but unusable: " + "; ".join(skipped)))
            _within_retention(backup, db, now, checks)
            _integrity_check(backup, None, checks)
            return backup
        skipped.append(f"skipped {backup.name}: {problem}")
    tried = len(skipped)
    checks.append(Check("Backup integrity", False,
                        f"none of the {tried} newest backups is usable: " + "; ".join(skipped)
                        + "; name an older one with --restore NAME (`backups` lists them)"))
    return None


async def _check_migrations(*, host: RemoteHost, env: EnvironmentConfig, db: DatabaseConfig,
                            checks: list[Check]) -> tuple[str, ...]:
    """Name the migration(s) migrate_down will undo: a data change the card must warn about."""
    checking("Migrations to undo", host.name)
    count = db.migrations_to_undo
    found: tuple[str, ...] | None = None
    source = ""
    problems = []
    if db.migrate_status:
        try:
            out = await host.run(cmd.in_compose_dir(env, db.migrate_status),
                                 timeout=env.timeouts.command_s)
            found, source = newest_migrations(out.output, count), "migrate_status"
            checks.append(migrate_status_check(host.name, None))
        except HostError as exc:
            problems.append(f"migrate_status failed: {str(exc)[:160]}")
            # The same run proves (or disproves) the prerequisite: no second migrate_status.
            checks.append(migrate_status_check(host.name, str(exc)[:160]))
    if found is None:
        try:
            out = await host.run(cmd.migrations_head(db), timeout=env.timeouts.command_s)
            found, source = newest_migrations(out.output, count), "the migrations table"
        except HostError as exc:
            problems.append(f"reading the migrations table failed: {str(exc)[:160]}")
    if not found:
        why = "; ".join(problems) or "no applied migration was listed"
        checks.append(Check("Migrations to undo", False,
                            f"cannot tell which migration migrate_down would undo ({why}); "
                            "nothing was run"))
        return ()
    if len(found) < count:
        checks.append(Check("Migrations to undo", False,
                            f"the runbook says to undo {count} migrations, but {source} lists "
                            f"only {len(found)}: {', '.join(found)}"))
        return found
    checks.append(Check("Migrations to undo", True,
                        f"migrate_down will undo {', '.join(found)} (newest, from {source}); "
                        "data stored by what it added is lost: coordinate with the DBA"))
    return found
