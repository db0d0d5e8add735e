"""Pre-flight's prerequisite commands and the parsing of what they print."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from bot.config import DatabaseConfig, load_runbook
from bot.errors import CommandFailed
from bot.model import Check, CommandResult, ProcedureName
from bot.prerequisites import (
    database_checks,
    database_size_bytes,
    df_available_bytes,
    human_size,
    version_endpoint_check,
    version_text_parseable,
)
from bot.procedures import commands as cmd

ENV = load_runbook(Path(__file__).parent / "data" / "rollbot.example.toml").environments[
    "production"]
DB = DatabaseConfig(
    name="azora_prod", psql="psql -X -h 127.0.0.1 -p 5432 -U postgres",
    pg_dump="pg_dump -h 127.0.0.1 -p 5432 -U postgres", backups_dir="/var/backups/azora",
    backup_glob="azora_prod_*.sql.gz",
)


def bash(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30)


def test_the_database_ping_is_select_1_through_the_runbooks_psql_and_stops_on_error() -> None:
    ping = cmd.database_ping(DB)
    assert ping.startswith("psql -X -h 127.0.0.1 -p 5432 -U postgres ")
    assert "ON_ERROR_STOP=1" in ping and "-d azora_prod" in ping and "'SELECT 1;'" in ping


def test_the_size_query_names_the_configured_database() -> None:
    args = shlex.split(cmd.database_size(DB))
    assert args[-1] == "SELECT pg_database_size('azora_prod');"
    assert args[args.index("-d") + 1] == "azora_prod" and "-At" in args


def test_the_writable_probe_leaves_nothing_behind_in_a_writable_directory(tmp_path: Path) -> None:
    done = bash(cmd.probe_writable(str(tmp_path)))
    assert done.returncode == 0 and "writable" in done.stdout
    assert list(tmp_path.iterdir()) == []


def test_the_writable_probe_fails_where_no_file_can_be_created(tmp_path: Path) -> None:
    assert bash(cmd.probe_writable(str(tmp_path / "missing"))).returncode != 0
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    assert bash(cmd.probe_writable(str(a_file))).returncode != 0


def test_the_writable_probe_quotes_the_directory(tmp_path: Path) -> None:
    odd = tmp_path / "dir with $(touch pwned) space"
    odd.mkdir()
    assert bash(cmd.probe_writable(str(odd))).returncode == 0
    assert not (Path.cwd() / "pwned").exists() and list(odd.iterdir()) == []


def test_free_space_is_read_from_posix_df_output(tmp_path: Path) -> None:
    real = bash(cmd.free_space(str(tmp_path)))
    assert real.returncode == 0
    free = df_available_bytes(real.stdout)
    assert free is not None and free > 0
    sample = ("Filesystem     1024-blocks     Used Available Capacity Mounted on\n"
              "/dev/sda1         41152736 30327580   8711440      78% /var/backups\n")
    assert df_available_bytes(sample) == 8711440 * 1024


def test_unreadable_df_output_is_none_not_a_guess() -> None:
    assert df_available_bytes("") is None
    assert df_available_bytes("df: /nope: No such file or directory\n") is None
    assert df_available_bytes("Filesystem 1024-blocks Used Available\n/dev/sda1 10 5 -\n") is None


def test_the_database_size_is_the_number_psql_printed() -> None:
    assert database_size_bytes("8741423\n") == 8741423
    assert database_size_bytes("NOTICE: something\n123\n") == 123
    assert database_size_bytes("ERROR: database does not exist\n") is None
    assert database_size_bytes("") is None
    assert human_size(8741423) == "8.7 MB" and human_size(512) == "512 B"


def test_a_version_body_is_parseable_when_it_reads_as_a_release_number() -> None:
    assert version_text_parseable("v1.2.3\n") == "v1.2.3"
    assert version_text_parseable('{"version": "v1.2.2"}') == "v1.2.2"
    assert version_text_parseable("1.2.2") == "1.2.2"
    assert version_text_parseable("<html>502 Bad Gateway</html>") is None
    assert version_text_parseable('{"status": "ok"}') is None
    assert version_text_parseable("") is None


class VersionEndpoint:
    """The service's version endpoint as the probe sees it; counts the requests."""

    def __init__(self, status: int | None, body: str) -> None:
        self.status, self.body, self.asked = status, body, 0

    async def fetch(self, url: str, *, timeout_s: float) -> tuple[int | None, str]:
        self.asked += 1
        return self.status, self.body


async def ask(endpoint: VersionEndpoint, procedure: ProcedureName = ProcedureName.SIMPLE,
              *, runs: bool = True) -> tuple[bool, str]:
    check = await version_endpoint_check(probe=endpoint, env=ENV, host_name="deploy@web-1:22",
                                         service_runs=runs, procedure=procedure)
    assert check.name == "Version endpoint"
    return check.ok, check.detail


async def test_a_version_endpoint_that_reports_a_version_passes() -> None:
    ok, detail = await ask(VersionEndpoint(200, '{"version": "v1.2.3"}'))
    assert ok and detail == f"{ENV.version_url} on deploy@web-1:22 reports v1.2.3"


@pytest.mark.parametrize(("status", "body", "said"), [
    (200, "<html>hello</html>", "answered '<html>hello</html>', which is not a version"),
    (200, "", "answered 'an empty body', which is not a version"),
])
async def test_a_version_endpoint_without_a_version_is_a_refusal_naming_host_and_answer(
    status: int | None, body: str, said: str
) -> None:
    ok, detail = await ask(VersionEndpoint(status, body))
    assert not ok
    assert ENV.version_url in detail and "deploy@web-1:22" in detail and said in detail
    assert "the emergency procedure does not need it" in detail


@pytest.mark.parametrize(("status", "body", "said"), [
    (503, "busy", "answers 503 now"),
    (None, "connection refused", "answers connection refused now"),
])
async def test_a_failing_release_that_does_not_answer_is_noted_not_refused(
    status: int | None, body: str, said: str
) -> None:
    # "Service completely down" is a reason to roll back, not a reason to refuse one
    ok, detail = await ask(VersionEndpoint(status, body))
    assert ok
    assert ENV.version_url in detail and "deploy@web-1:22" in detail and said in detail
    assert "reads it again once the target runs" in detail


async def test_the_version_endpoint_is_not_asked_when_nothing_should_answer() -> None:
    down = VersionEndpoint(None, "connection refused")
    assert (await ask(down, ProcedureName.EMERGENCY))[0]
    ok, detail = await ask(down, runs=False)
    assert ok and "no api container runs on deploy@web-1:22" in detail
    assert down.asked == 0


class LocalShell:
    """A host whose commands run here with bash: enough for the database pre-flight's commands."""

    name = "prod-user@db-host:22"

    async def run(self, command: str, *, timeout: float, on_line: object = None,
                  check: bool = True) -> CommandResult:
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                              timeout=timeout)
        result = CommandResult(command=command, exit_status=done.returncode,
                               output=done.stdout + done.stderr, truncated=False, duration_s=0)
        if check and done.returncode != 0:
            raise CommandFailed(f"`{command[:40]}` exited with {done.returncode}",
                                exit_status=done.returncode, output_tail=result.output)
        return result


def psql_script(tmp_path: Path, body: str) -> DatabaseConfig:
    script = tmp_path / "psql.sh"
    script.write_text(body)
    return DatabaseConfig(name="azora_prod", psql=f"sh {script}", pg_dump="pg_dump",
                          backups_dir=str(tmp_path), backup_glob="azora_prod_*.sql.gz")


async def database_checks_with(db: DatabaseConfig, procedure: ProcedureName) -> list[Check]:
    checks: list[Check] = []
    env = ENV.model_copy(update={"database": db.model_copy(update={"migrate_status": None})})
    await database_checks(host=LocalShell(), env=env, db=db,  # type: ignore[arg-type]
                          procedure=procedure, checks=checks)
    return checks


async def test_a_restore_refuses_a_psql_that_does_not_read_what_is_piped_into_it(
    tmp_path: Path
) -> None:
    # `docker exec prod-db psql` without -i: psql runs, but the container gets no stdin, so
    # the restore would feed it nothing after the DROP. A query given with -c still works.
    deaf = psql_script(tmp_path, 'case "$*" in *-c*) echo 1;; esac\n')
    [reachable, *_] = await database_checks_with(deaf, ProcedureName.RESTORE)
    assert not reachable.ok
    assert "prod-user@db-host:22" in reachable.detail
    assert "does not read its standard input" in reachable.detail
    [migrations_ok] = await database_checks_with(deaf, ProcedureName.MIGRATIONS)
    assert migrations_ok.ok and "ran SELECT 1 in" in migrations_ok.detail


async def test_a_restore_accepts_a_psql_that_answers_the_piped_select(tmp_path: Path) -> None:
    listening = psql_script(tmp_path, 'grep -q "SELECT 1;" && echo 1\n')
    [reachable, *_] = await database_checks_with(listening, ProcedureName.RESTORE)
    assert reachable.ok and "SELECT 1 piped into it" in reachable.detail
