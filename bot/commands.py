"""The exact shell commands of the procedures, built from validated values only."""

from __future__ import annotations

from bot.config import DatabaseConfig, EnvironmentConfig
from bot.shell import join, quote, sql_identifier, with_prefix

__all__ = ["DUMP_TRAILER", "join", "quote"]

# pg_dump ends a plain dump with "-- PostgreSQL database dump complete".
DUMP_TRAILER = "dump complete"


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


def migrations_head(db: DatabaseConfig) -> str:
    return psql(db, "SELECT * FROM migrations ORDER BY executed_at DESC LIMIT 5;",
                database=db.name)


def row_counts(db: DatabaseConfig) -> str:
    selects = " UNION ALL ".join(
        f"SELECT '{t}', count(*) FROM {sql_identifier(t, what='Table')}" for t in db.verify_tables
    )
    return psql(db, selects + ";", database=db.name, tuples_only=True)


def gunzip_test(path: str) -> str:
    return join("gunzip", "-t", path)


def dump_complete(path: str) -> str:
    """The backup decompresses to a dump that pg_dump finished (its closing line is there)."""
    inner = f"gunzip -c {quote(path)} | tail -n 5 | grep -q {quote(DUMP_TRAILER)}"
    return join("bash", "-o", "pipefail", "-c", inner)


def safety_backup(db: DatabaseConfig, final_path: str) -> str:
    """pg_dump | gzip into a temp file; kept only if complete and non-empty (then renamed)."""
    tmp = final_path + ".partial"
    q_tmp, q_final = quote(tmp), quote(final_path)
    inner = (
        f"{with_prefix(db.pg_dump, db.name)} | gzip > {q_tmp}"
        f" && test -s {q_tmp} && gunzip -t {q_tmp}"
        f" && gunzip -c {q_tmp} | tail -n 5 | grep -q {quote(DUMP_TRAILER)}"
        f" && mv {q_tmp} {q_final} && ls -l {q_final}"
    )
    return join("bash", "-o", "pipefail", "-c", inner)


def restore_from(db: DatabaseConfig, backup_path: str) -> str:
    # One transaction: the restore is all or nothing.
    psql_cmd = with_prefix(db.psql, "-v", "ON_ERROR_STOP=1", "--single-transaction", "-q",
                           "-d", db.name)
    inner = f"gunzip < {quote(backup_path)} | {psql_cmd}"
    return join("bash", "-o", "pipefail", "-c", inner)


def remove_latest_tag(env: EnvironmentConfig) -> str:
    ref = quote(f"{env.image}:latest")
    return (f"if docker image inspect {ref} >/dev/null 2>&1; then docker rmi {ref}; "
            f"else echo 'no {env.image}:latest tag here; nothing to remove'; fi")
