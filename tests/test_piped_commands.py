"""psql and pg_dump prefixes are one simple command, or the runbook does not load.

rollbot builds ``gunzip < BACKUP | PSQL …`` and ``PG_DUMP … | gzip``: with ``cd x && psql`` the
backup would be piped into ``cd``, so such a runbook is refused at load, before anything runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import load_runbook
from bot.errors import ConfigError
from bot.shell import shell_control

EXAMPLE = Path(__file__).parent / "data" / "rollbot.example.toml"
PSQL = 'psql = "docker exec -i prod-db psql -U postgres"'
PG_DUMP = 'pg_dump = "docker exec prod-db pg_dump -U postgres"'


def runbook_with(tmp_path: Path, line: str, *, key: str = "psql") -> Path:
    text = EXAMPLE.read_text()
    old = PSQL if key == "psql" else PG_DUMP
    assert old in text
    path = tmp_path / "rollbot.toml"
    path.write_text(text.replace(old, line))
    return path


@pytest.mark.parametrize(("prefix", "says"), [
    ("cd /srv/azora && psql -U postgres", "`&&`"),
    ("source /etc/azora.env; psql -U postgres", "`;`"),
    ("true || psql -U postgres", "`||`"),
    ("cat /dev/null | psql -U postgres", "`|`"),
    ("psql -U postgres &", "`&`"),
    ("(psql -U postgres)", "a subshell"),
    ("psql -U postgres < /tmp/other.sql", "a redirection (`<`)"),
    ("psql -U postgres > /dev/null", "a redirection (`>`)"),
    ("psql -U postgres 2>&1", "a redirection (`>`)"),
    ("psql -U $(cat /etc/pguser)", "a command substitution `$( )`"),
    ('psql -U "$(cat /etc/pguser)"', "a command substitution `$( )`"),
    ("psql -U `whoami`", "a command substitution"),
    ("psql -U postgres # the prod cluster", "a comment"),
    ("! psql -U postgres", "inverts the exit status"),
])
def test_compound_psql_is_refused_at_load_naming_file_key_and_the_way_out(
        tmp_path: Path, prefix: str, says: str) -> None:
    path = runbook_with(tmp_path, f"psql = '{prefix}'")
    with pytest.raises(ConfigError) as err:
        load_runbook(path)
    text = str(err.value)
    assert text.startswith(f"{path}: key 'environments.production.database.psql'")
    assert says in text
    assert "gunzip < BACKUP |" in text  # why it matters
    assert "wrapper script" in text and "exec psql \"$@\"" in text  # what to do instead
    assert "docker exec -i CONTAINER psql" in text


def test_compound_pg_dump_is_refused_too(tmp_path: Path) -> None:
    path = runbook_with(tmp_path, 'pg_dump = "cd /srv && pg_dump -U postgres"', key="pg_dump")
    with pytest.raises(ConfigError) as err:
        load_runbook(path)
    assert "environments.production.database.pg_dump" in str(err.value)
    assert "| gzip" in str(err.value) and "exec pg_dump" in str(err.value)


def test_a_password_in_a_refused_prefix_is_not_repeated(tmp_path: Path) -> None:
    path = runbook_with(tmp_path, 'psql = "env PGPASSWORD=hunter2 psql -U postgres; true"')
    with pytest.raises(ConfigError) as err:
        load_runbook(path)
    assert "hunter2" not in str(err.value)


@pytest.mark.parametrize("prefix", [
    "docker exec -i prod-db psql -U postgres",
    "env PGPASSWORD=x psql -h 127.0.0.1 -U postgres",
    "PGPASSWORD='a;b|c' psql -U postgres",  # operators inside quotes are data
    "PGOPTIONS='-c statement_timeout=0' psql -X -U postgres",
    "psql -h $DB_HOST -U ${DB_USER}",
    "psql -v 'x=a#b' -U postgres",
    "/usr/local/bin/azora-psql",
    "sudo -u postgres psql",
])
def test_simple_prefixes_load(tmp_path: Path, prefix: str) -> None:
    path = runbook_with(tmp_path, f'psql = "{prefix}"' if '"' not in prefix
                        else f"psql = '{prefix}'")
    env = load_runbook(path).environments["production"]
    assert env.database is not None and env.database.psql == prefix


def test_shell_control_reads_quotes_and_escapes_like_a_shell() -> None:
    assert shell_control("psql -c 'a; b && c'") == []
    assert shell_control('psql -c "a; b"') == []
    assert shell_control("psql \\; x") == []
    assert shell_control("a && b; c | d") == ["`&&`", "`;`", "`|`"]
    assert shell_control('psql "`id`"') == ["a command substitution"]
    assert shell_control("psql x#y") == []  # not a comment: the # is inside a word


@pytest.mark.parametrize(("key", "line"), [
    ("pg_dump", 'pg_dump = "docker exec -t prod-db pg_dump -U postgres"'),
    ("pg_dump", 'pg_dump = "env PGPASSWORD=pw docker exec -it prod-db pg_dump -U postgres"'),
    ("psql", 'psql = "docker exec -i --tty prod-db psql -U postgres"'),
    ("psql", 'psql = "docker container exec -ti prod-db psql -U postgres"'),
])
def test_a_container_tool_behind_a_tty_is_refused_at_load(tmp_path: Path, key: str,
                                                          line: str) -> None:
    # `docker exec -t` turns each "\n" into "\r\n": a safety dump taken that way still gunzips
    # and ends with "dump complete", but its rows are altered. Nothing would say so.
    path = runbook_with(tmp_path, line, key=key)
    with pytest.raises(ConfigError) as err:
        load_runbook(path)
    text = str(err.value)
    assert text.startswith(f"{path}: key 'environments.production.database.{key}'")
    assert "with a TTY (-t / --tty)" in text and "\\r\\n" in text
    assert f"docker exec -i CONTAINER {key}" in text


@pytest.mark.parametrize("line", [
    'pg_dump = "docker exec prod-db pg_dump -U postgres -t orders"',  # pg_dump's own -t: a table
    'pg_dump = "docker exec -u postgres -w /tmp prod-db pg_dump -U postgres"',
    'pg_dump = "docker exec --tty=false prod-db pg_dump -U postgres"',
])
def test_container_tools_without_a_tty_load(tmp_path: Path, line: str) -> None:
    load_runbook(runbook_with(tmp_path, line, key="pg_dump"))
