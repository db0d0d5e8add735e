"""The exact shell commands of the procedures, built from validated values only."""

from __future__ import annotations

import hashlib

from bot.config import DatabaseConfig, EnvironmentConfig
from bot.shell import join, quote, sql_identifier, with_prefix

__all__ = ["DUMP_TRAILER", "join", "quote"]

# pg_dump ends a plain dump with "-- PostgreSQL database dump complete" (newer pg_dump versions
# add a few lines after it, such as `\unrestrict`, hence the last 20 lines, not the last one).
DUMP_TRAILER = "dump complete"
_TRAILER_LINES = 20


def compose(env: EnvironmentConfig, *args: str) -> str:
    """``docker-compose -f FILE ARGS`` run in the compose file's directory (for its .env)."""
    c = env.compose
    return f"cd {quote(c.directory)} && {c.command} -f {quote(c.file)} {join(*args)}"


def in_compose_dir(env: EnvironmentConfig, runbook_command: str) -> str:
    return f"cd {quote(env.compose.directory)} && {runbook_command}"


def psql(db: DatabaseConfig, sql: str, *, database: str, tuples_only: bool = False) -> str:
    """psql that stops on the first error (a plain psql exits 0 even when a statement failed)."""
    args = ["-v", "ON_ERROR_STOP=1", "-d", database]
    if tuples_only:
        args += ["-At"]
    return with_prefix(db.psql, *args, "-c", sql)


def drop_database(db: DatabaseConfig) -> str:
    return psql(db, f"DROP DATABASE {sql_identifier(db.name, what='Database')};",
                database="postgres")


def create_database(db: DatabaseConfig) -> str:
    return psql(db, f"CREATE DATABASE {sql_identifier(db.name, what='Database')};",
                database="postgres")


def migrations_head(db: DatabaseConfig, *, limit: int = 5) -> str:
    """The spec's look at the migrations table: the newest rows first."""
    return psql(db, f"SELECT * FROM migrations ORDER BY executed_at DESC LIMIT {int(limit)};",
                database=db.name)


def migration_rows(psql_output: str) -> list[str]:
    """The rows of ``migrations_head``'s table, newest first, as "id | name | executed_at".

    psql pads each column to its widest value, which changes when a row goes: the cells are
    stripped so that a row reads the same before and after a migrate_down.
    """
    return [" | ".join(cell.strip() for cell in ln.split("|"))
            for ln in psql_output.splitlines()[2:] if "|" in ln]


def row_counts(db: DatabaseConfig) -> str:
    selects = " UNION ALL ".join(
        f"SELECT '{t}', count(*) FROM {sql_identifier(t, what='Table')}" for t in db.verify_tables
    )
    return psql(db, selects + ";", database=db.name, tuples_only=True)


def verify_backup_integrity(path: str) -> str:
    """One read of the backup: gzip's CRC and length checks, then pg_dump's closing line.

    ``gunzip -c`` checks exactly what ``gunzip -t`` checks while it decompresses, so one pass
    replaces ``gunzip -t`` followed by ``gunzip -c | tail``.
    """
    q = quote(path)
    no_trailer = f"no \"{DUMP_TRAILER}\" line at its end: pg_dump did not finish this dump"
    inner = (
        f"end=$(gunzip -c {q} | tail -n {_TRAILER_LINES}) || {{ echo "
        f"{quote('gunzip failed: the file is damaged or cut short')}; exit 1; }}; "
        f"{_require_trailer(no_trailer)}"
    )
    return join("bash", "-o", "pipefail", "-c", inner)


def _require_trailer(complaint: str) -> str:
    return (f"case $end in *{quote(DUMP_TRAILER)}*) ;; "
            f"*) echo {quote(complaint)}; exit 1;; esac")


def session_tag(*parts: str) -> str:
    """An ``application_name`` that finds one command's database session (same inputs, same tag).

    Derived, not random, so the plan shows the very command the run sends.
    """
    return "rollbot-" + hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


def _connect_as(database: str, tag: str) -> str:
    """A libpq connection string: psql and pg_dump take one wherever they take a database name."""
    sql_identifier(database, what="Database")  # plain, so it needs no quoting inside the string
    return f"dbname={database} application_name={tag}"


def _end_session_when_stopped(db: DatabaseConfig, tag: str) -> str:
    """A trap that, when the command is stopped, has the server end the command's session.

    Stopping a command kills its processes on the host, but a psql started by ``docker exec``
    (or ``kubectl exec``, or ssh) runs elsewhere and outlives its client: a query keeps running,
    and a restore fed through the client's stdin would see end-of-input. The server ends the
    session it finds by ``application_name``, which rolls back its open transaction.
    """
    sql = ("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
           f"WHERE application_name = '{tag}';")
    # In double quotes: the SQL has single quotes and nothing a shell expands (the tag is hex).
    end = with_prefix(db.psql, "-d", db.name, "-At", "-c") + f' "{sql}"'
    return (f"end_session() {{ {end}; }}; "
            'trap "end_session >/dev/null 2>&1; exit 143" TERM INT HUP; ')


def safety_backup(db: DatabaseConfig, final_path: str) -> str:
    """pg_dump | gzip into a temp file, verified in the same pass; renamed only when complete.

    The compressed stream is teed into the file and into ``gunzip -c``, so gzip's integrity and
    pg_dump's closing line are checked on exactly the bytes written, without reading the file
    back (a read right after the write comes from the page cache anyway, not from the disk).
    ``pipefail`` makes a failure of pg_dump, gzip, the write (tee) or gunzip fail the step.
    """
    tmp = final_path + ".partial"
    q_tmp, q_final = quote(tmp), quote(final_path)
    no_trailer = (f"the dump has no \"{DUMP_TRAILER}\" line at its end: pg_dump did not finish; "
                  "no safety backup was made")
    tag = session_tag("safety_backup", db.name, final_path)
    inner = (
        f"{_end_session_when_stopped(db, tag)}"
        f"end=$({with_prefix(db.pg_dump, _connect_as(db.name, tag))} | gzip | tee {q_tmp}"
        f" | gunzip -c"
        f" | tail -n {_TRAILER_LINES}) || {{ echo "
        f"{quote(f'pg_dump, gzip or writing {tmp} failed: no safety backup was made')}; "
        f"exit 1; }}; "
        f"test -s {q_tmp} || {{ echo {quote(f'{tmp} is empty: no safety backup was made')}; "
        f"exit 1; }}; "
        f"{_require_trailer(no_trailer)}; "
        f"mv {q_tmp} {q_final} && ls -l {q_final}"
    )
    return join("bash", "-o", "pipefail", "-c", inner)


def restore_from(db: DatabaseConfig, backup_path: str) -> str:
    """The backup into psql in one transaction that commits only after the whole stream.

    Not ``--single-transaction``: psql commits that at end of input, and end of input is also
    what a psql behind ``docker exec -i`` sees when its client is killed (a timeout, a cancel),
    or what any psql sees when gunzip fails on a damaged tail: a partial restore would be
    committed. Here COMMIT is sent only after gunzip finished intact; cut short, the session
    ends without it and PostgreSQL rolls the restore back.
    """
    tag = session_tag("restore", db.name, backup_path)
    psql_cmd = with_prefix(db.psql, "-v", "ON_ERROR_STOP=1", "-q", "-d",
                           _connect_as(db.name, tag))
    inner = (f"{_end_session_when_stopped(db, tag)}"
             f'{{ echo "BEGIN;"; gunzip -c {quote(backup_path)} && echo "COMMIT;"; }} '
             f"| {psql_cmd}")
    return join("bash", "-o", "pipefail", "-c", inner)


def remove_latest_tag(env: EnvironmentConfig) -> str:
    """The spec's `docker rmi IMAGE:latest`, for each image the release switches."""
    def one(image: str) -> str:
        ref = quote(f"{image}:latest")
        return (f"if docker image inspect {ref} >/dev/null 2>&1; then docker rmi {ref}; "
                f"else echo 'no {image}:latest tag here; nothing to remove'; fi")
    return "; ".join(one(image) for image in (env.services.values() or [env.image]))


def database_ping(db: DatabaseConfig, *, through_stdin: bool = False) -> str:
    """Pre-flight: the runbook's psql reaches the database (no change, no lock taken).

    ``through_stdin`` sends the query the way the restore sends the backup, piped into psql: a
    psql that does not read that pipe (``docker exec`` without ``-i``) answers nothing.
    """
    if through_stdin:
        return (f"echo {quote('SELECT 1;')} | "
                + with_prefix(db.psql, "-v", "ON_ERROR_STOP=1", "-d", db.name, "-At"))
    return psql(db, "SELECT 1;", database=db.name, tuples_only=True)


def database_size(db: DatabaseConfig) -> str:
    """Pre-flight: the database's size in bytes, what the safety dump may need at most."""
    sql_identifier(db.name, what="Database")  # the name goes into a string literal: plain only
    return psql(db, f"SELECT pg_database_size('{db.name}');", database=db.name,
                tuples_only=True)


def probe_writable(directory: str) -> str:
    """Pre-flight: create and remove a temp file, as the safety dump will write one there."""
    d = quote(directory)
    return (f"tmp=$(mktemp -p {d} .rollbot-preflight.XXXXXX) && rm -f -- \"$tmp\" "
            f"&& echo writable")


def free_space(directory: str) -> str:
    """Pre-flight: POSIX ``df`` in 1 KiB blocks for the filesystem holding ``directory``."""
    return join("df", "-Pk", directory)
