"""Pre-flight's proofs of what the steps need: database, backups dir, version endpoint, compose."""

from __future__ import annotations

import re

from bot.config import DatabaseConfig, EnvironmentConfig
from bot.errors import CommandFailed, HostError
from bot.model import Check, ContainerState, ProcedureName
from bot.ports import HttpProbe, RemoteHost
from bot.preflight_deadline import checking
from bot.procedures import commands as cmd
from bot.procedures.project_name import ProjectNaming, naming_from_command, predict_project_name
from bot.procedures.release_files import ReleaseFiles, read_env_text
from bot.versions import reported_version

# The version check compares release numbers; a leading "v" and any suffix are a format question.
_RELEASE_NUMBER = re.compile(r"v?[0-9]+\.[0-9]+\.[0-9]+")
_IF_DOWN = "(if the service is down, the emergency procedure does not need it)"


def df_available_bytes(df_output: str) -> int | None:
    """Free bytes from ``df -Pk DIR`` (header, then one line: fs, blocks, used, available…)."""
    lines = [ln for ln in df_output.splitlines() if ln.strip()]
    if len(lines) < 2:
        return None
    fields = lines[-1].split()
    if len(fields) < 4 or not fields[3].isdigit():
        return None
    return int(fields[3]) * 1024


def database_size_bytes(psql_output: str) -> int | None:
    """The number ``SELECT pg_database_size(...)`` printed with ``-At``; None when not one."""
    lines = [ln.strip() for ln in psql_output.splitlines() if ln.strip()]
    return int(lines[-1]) if lines and lines[-1].isdigit() else None


def human_size(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def version_text_parseable(body: str, json_key: str = "version") -> str | None:
    """The version a /version body reports when it reads as a release number; else None."""
    seen = reported_version(body, json_key)
    return seen if _RELEASE_NUMBER.match(seen) else None


def _why(exc: HostError) -> str:
    if isinstance(exc, CommandFailed):
        tail = exc.output_tail.strip()
        if tail:
            return tail.splitlines()[-1][:200]
    return str(exc)[:200]


async def database_checks(*, host: RemoteHost, env: EnvironmentConfig, db: DatabaseConfig,
                          procedure: ProcedureName, checks: list[Check]) -> None:
    """migrations and restore: psql reaches the database; restore: the safety dump fits."""
    timeout = env.timeouts.command_s
    # The restore pipes the backup into psql: prove that pipe reaches it, not only psql -c.
    piped = procedure is ProcedureName.RESTORE
    checking("Database reachable", host.name)
    try:
        answer = (await host.run(cmd.database_ping(db, through_stdin=piped),
                                 timeout=timeout)).output
    except HostError as exc:
        checks.append(Check("Database reachable", False,
                            f"the runbook's psql on {host.name} cannot reach database {db.name} "
                            f"({_why(exc)}); fix database.psql before a rollback stops anything"))
        return
    if piped and "1" not in answer.split():
        checks.append(Check("Database reachable", False,
                            f"the runbook's psql on {host.name} answered nothing to SELECT 1 "
                            "piped into it: it does not read its standard input, so the "
                            "restore would restore nothing after the DROP (for `docker exec`, "
                            "add -i); fix database.psql"))
        return
    how = "SELECT 1 piped into it" if piped else "SELECT 1"
    checks.append(Check("Database reachable", True,
                        f"psql on {host.name} ran {how} in database {db.name}"))
    if procedure is ProcedureName.RESTORE:
        if db.migrate_status:
            await _migrate_status_check(host=host, env=env, status=db.migrate_status,
                                        checks=checks)
        await _backups_dir_checks(host=host, db=db, timeout=timeout, checks=checks)


async def _migrate_status_check(*, host: RemoteHost, env: EnvironmentConfig, status: str,
                                checks: list[Check]) -> None:
    checking("Migrate status", host.name)
    try:
        await host.run(cmd.in_compose_dir(env, status),
                       timeout=env.timeouts.command_s)
    except HostError as exc:
        checks.append(migrate_status_check(host.name, _why(exc)))
        return
    checks.append(migrate_status_check(host.name, None))


def migrate_status_check(host_name: str, problem: str | None) -> Check:
    """The "migrate_status runs" check, from whichever pre-flight step already ran it."""
    if problem is not None:
        return Check("Migrate status", False,
                     f"database.migrate_status failed on {host_name} ({problem}); the migrate "
                     "tool cannot reach the database")
    return Check("Migrate status", True, f"database.migrate_status ran on {host_name}")


async def _backups_dir_checks(*, host: RemoteHost, db: DatabaseConfig, timeout: float,
                              checks: list[Check]) -> None:
    where = f"{db.backups_dir} on {host.name}"
    checking("Backups dir writable", host.name)
    try:
        await host.run(cmd.probe_writable(db.backups_dir), timeout=timeout)
    except HostError as exc:
        checks.append(Check("Backups dir writable", False,
                            f"the SSH user cannot create a file in {where} ({_why(exc)}); the "
                            "safety dump taken before the restore would fail"))
        return
    checks.append(Check("Backups dir writable", True,
                        f"the SSH user created and removed a temp file in {where}"))
    checking("Backups dir space", host.name)
    try:
        size = database_size_bytes((await host.run(cmd.database_size(db), timeout=timeout))
                                   .output)
        free = df_available_bytes((await host.run(cmd.free_space(db.backups_dir),
                                                  timeout=timeout)).output)
    except HostError as exc:
        checks.append(Check("Backups dir space", False,
                            f"cannot measure the free space in {where} or the size of "
                            f"{db.name} ({_why(exc)})"))
        return
    if size is None or free is None:
        checks.append(Check("Backups dir space", False,
                            f"cannot read the free space in {where} or the size of {db.name} "
                            "(unexpected df or psql output)"))
    elif free < size:
        checks.append(Check("Backups dir space", False,
                            f"{where} has {human_size(free)} free, less than the "
                            f"{human_size(size)} of {db.name}: the safety dump may not fit"))
    else:
        checks.append(Check("Backups dir space", True,
                            f"{human_size(free)} free in {where}, {db.name} is "
                            f"{human_size(size)}"))


async def version_endpoint_check(*, probe: HttpProbe, env: EnvironmentConfig, host_name: str,
                                 service_runs: bool, procedure: ProcedureName) -> Check:
    """The endpoint the last step reads answers a version now, so that step can confirm one."""
    url = env.version_url
    if procedure is ProcedureName.EMERGENCY:
        # The fastest path has no version step; a down service must not delay or block it.
        return Check("Version endpoint", True,
                     f"not asked: the emergency procedure does not read {url}")
    if not service_runs:
        return Check("Version endpoint", True,
                     f"not asked: no {env.service} container runs on {host_name} to answer {url}")
    status, body = await probe.fetch(url, timeout_s=10)
    if status is None or not 200 <= status < 300:
        # A failing release that does not answer is often why people roll back: say so, and
        # let the version step judge the target once it runs.
        return Check("Version endpoint", True,
                     f"{url} ({env.service} on {host_name}) answers "
                     f"{status or body[:120]} now; the version step reads it again once the "
                     "target runs")
    seen = version_text_parseable(body, env.version_json_key)
    if seen is None:
        # It answers, but not a version: version_url or version_json_key is wrong, so the
        # version step could never confirm the rollback.
        shown = " ".join(body.split())[:60] or "an empty body"
        return Check("Version endpoint", False,
                     f"{url} ({env.service} on {host_name}) answered '{shown}', which is not a "
                     f"version; the version step could never confirm a rollback (check "
                     f"version_url and version_json_key; {_IF_DOWN})")
    return Check("Version endpoint", True, f"{url} on {host_name} reports {seen}")


async def compose_naming(*, host: RemoteHost, env: EnvironmentConfig, release: ReleaseFiles,
                         in_shell: frozenset[str]) -> ProjectNaming:
    """How compose names the project, from what pre-flight read (.env only if not read yet)."""
    decided = naming_from_command(env.compose)
    if decided is not None:
        return decided
    try:
        env_text = (release.env_text if release.variables
                    else await read_env_text(host, release.env_file))
    except HostError as exc:
        return ProjectNaming(None, f"{release.env_file} could not be read ({_why(exc)})")
    return predict_project_name(env.compose, compose_text=release.compose_text,
                                env_text=env_text, env_file=release.env_file, in_shell=in_shell)


async def compose_resolves_check(*, host: RemoteHost, env: EnvironmentConfig,
                                 naming: ProjectNaming, containers: list[ContainerState],
                                 api_sees_service: bool) -> Check:
    """docker-compose (what the stop/start steps run) and Docker (what the checks read) agree.

    A disagreement means the project name rollbot looks for is not the one compose uses: the
    later steps would then check containers the earlier ones did not touch. When compose's name
    is certain (``naming``) and the service runs, the running containers' project label is
    compared with it; otherwise compose is asked (a few tenths of a second of CPU per host).
    """
    project, where = env.compose.described, f"{env.compose.directory} on {host.name}"
    running = {c.project for c in containers if c.service == env.service and c.up}
    if naming.name is not None and api_sees_service and "" not in running:
        shown = " and ".join(f"'{p}'" for p in sorted(running))
        if running == {naming.name}:
            return Check("Compose project", True,
                         f"{env.service} runs in {project} in {where}: "
                         f"{env.compose.command} names it '{naming.name}' ({naming.source}), "
                         "the project Docker shows it running in")
        if naming.name not in running:
            return Check("Compose project", False,
                         f"{env.compose.command} in {where} would act on project "
                         f"'{naming.name}' ({naming.source}), but the running {env.service} "
                         f"containers belong to project {shown} (Docker's labels): the stop and "
                         "start steps would miss them. Make the two agree (-p in "
                         "compose.command, COMPOSE_PROJECT_NAME in .env, or the app restarted "
                         "under the new name) before rolling back")
    return await _compose_answers_check(host=host, env=env, api_sees_service=api_sees_service)


async def _compose_answers_check(*, host: RemoteHost, env: EnvironmentConfig,
                                 api_sees_service: bool) -> Check:
    """The same proof asked of compose: does `ps` list the service running, as Docker does?"""
    project, where = env.compose.described, f"{env.compose.directory} on {host.name}"
    try:
        out = await host.run(cmd.compose(env, "ps", "--services", "--filter", "status=running"),
                             timeout=env.timeouts.command_s)
    except HostError as exc:
        return Check("Compose project", False,
                     f"`{env.compose.command} ps` failed in {where} ({_why(exc)}); the stop and "
                     "start steps run the same command")
    # Output interleaves stderr (compose warnings): only a line that is the service's name counts.
    compose_runs = env.service in (ln.strip() for ln in out.output.splitlines())
    if compose_runs == api_sees_service:
        said = "runs" if compose_runs else "does not run"
        return Check("Compose project", True,
                     f"{env.service} {said} in {project} in {where}, for "
                     f"{env.compose.command} and Docker alike")
    if compose_runs:
        return Check("Compose project", False,
                     f"{env.compose.command} in {where} runs {env.service}, but Docker shows no "
                     f"running {env.service} container of {project}, the project rollbot "
                     "looks for; set compose.project to the project compose uses")
    return Check("Compose project", False,
                 f"Docker shows {env.service} running in {project}, but "
                 f"{env.compose.command} in {where} lists no running {env.service}: "
                 "compose.project names another project than the compose file's")
