"""Who may use the embedded cluster: peer authentication, rollbot's non-superuser role, its db.

The cluster accepts Unix-socket connections only, authenticated by ``peer`` (the kernel tells the
server which OS user connects; no password exists to steal). ``pg_ident.conf`` maps the cluster's
owner (``postgres`` when rollbot is root, else rollbot's own user) to the bootstrap superuser
``postgres``, and rollbot's OS user to the role ``rollbot``, which is not a superuser: it owns its
database and may create databases, nothing more, so it cannot run ``COPY … TO PROGRAM`` or read
files as the server.

Clusters made by older rollbots (superuser ``rollbot`` from initdb, ``trust`` on TCP) are upgraded
in place on their next start, in one transaction: the bootstrap role is renamed ``postgres``, a
new ``rollbot`` role is created, and the ``rollbot`` database and everything in it change owner.
"""

from __future__ import annotations

import logging
from pathlib import Path

from bot.errors import StoreError
from bot.store.pg_binaries import PgBinaries, ToolResult

log = logging.getLogger(__name__)

USER = "rollbot"
DATABASE = "rollbot"
SUPERUSER = "postgres"
PORT = 5432
_MAP = "rollbot"
_CLIENT_TIMEOUT_S = 30.0

HBA_HEADER = "# Written by rollbot: Unix socket only, peer authentication through pg_ident.conf."
HBA = f"""\
{HBA_HEADER}
# Nothing else is accepted: no TCP, no replication, no other OS user.
# TYPE  DATABASE  USER  METHOD
local   all       all   peer map={_MAP}
"""

_ROLLBOT_ROLE = "LOGIN NOSUPERUSER CREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"

# Objects the old bootstrap role (OID 10) made in the rollbot database, handed to the new role.
# Tables first: their sequences follow them, and a table's own sequence cannot be moved alone.
_HAND_OVER_OBJECTS = rf"""
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT format('ALTER %s %s OWNER TO {USER}',
                      CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                     WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
                      c.oid::regclass) AS q
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relowner = 10 AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
          AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%'
    LOOP EXECUTE r.q; END LOOP;
    FOR r IN
        SELECT format('ALTER SEQUENCE %s OWNER TO {USER}', c.oid::regclass) AS q
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relowner = 10 AND c.relkind = 'S'
          AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%'
    LOOP EXECUTE r.q; END LOOP;
    FOR r IN
        SELECT format('ALTER ROUTINE %s OWNER TO {USER}', p.oid::regprocedure) AS q
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE p.proowner = 10
          AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%'
    LOOP EXECUTE r.q; END LOOP;
    FOR r IN
        SELECT format('ALTER TYPE %s OWNER TO {USER}', t.oid::regtype) AS q
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        LEFT JOIN pg_class c ON c.oid = t.typrelid
        WHERE t.typowner = 10 AND (t.typtype IN ('e', 'd', 'r') OR c.relkind = 'c')
          AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%'
    LOOP EXECUTE r.q; END LOOP;
    FOR r IN
        SELECT format('ALTER SCHEMA %I OWNER TO {USER}', nspname) AS q
        FROM pg_namespace
        WHERE nspowner = 10 AND nspname <> 'information_schema' AND nspname NOT LIKE 'pg\_%'
    LOOP EXECUTE r.q; END LOOP;
END $$;
"""

def _upgrade_sql(*, with_database: bool) -> str:
    """The upgrade, run as the old bootstrap superuser 'rollbot' in its database if it has one."""
    # A role cannot rename itself while it is the session user, so a temporary superuser takes
    # the session over for the rename, then goes.
    steps = [
        "SET client_min_messages = warning",
        "CREATE ROLE rollbot_upgrading SUPERUSER NOLOGIN",
        "SET SESSION AUTHORIZATION rollbot_upgrading",
        f"ALTER ROLE {USER} RENAME TO {SUPERUSER}",
        f"CREATE ROLE {USER} {_ROLLBOT_ROLE}",
    ]
    if with_database:
        steps += [_HAND_OVER_OBJECTS.strip().rstrip(";"),
                  f"ALTER DATABASE {DATABASE} OWNER TO {USER}"]
    steps += ["RESET SESSION AUTHORIZATION", "DROP ROLE rollbot_upgrading"]
    return ";\n".join(steps) + ";"


def ident_map(*, owner: str, client: str) -> str:
    """pg_ident.conf: the owner may be the superuser (or rollbot: upgrades), the client rollbot."""
    rows = [(owner, SUPERUSER), (owner, USER), (client, USER)]
    lines = [
        "# Written by rollbot: which OS user may connect as which role (peer authentication).",
        "# MAPNAME  SYSTEM-USERNAME  PG-USERNAME",
    ]
    lines += [f"{_MAP}  {os_user}  {role}" for os_user, role in dict.fromkeys(rows)]
    return "\n".join(lines) + "\n"


def dsn(sock_dir: Path) -> str:
    """The rollbot database over the socket in ``sock_dir`` (percent-encoded host)."""
    host = str(sock_dir).replace("%", "%25").replace("/", "%2F")
    return f"postgresql://{USER}@{host}:{PORT}/{DATABASE}"


class ClusterAccess:
    """Makes a started cluster's roles and database right, as its owner, over the socket."""

    def __init__(self, binaries: PgBinaries, sock_dir: Path) -> None:
        self._bin = binaries
        self._sock_dir = sock_dir

    def ensure(self) -> None:
        """Upgrade an old-layout cluster if needed; then the rollbot role and database exist."""
        probe = self._psql(SUPERUSER, "postgres", "SELECT 1")
        if probe.returncode != 0:
            if f'role "{SUPERUSER}" does not exist' not in probe.output:
                raise self._failure("Cannot connect to the embedded PostgreSQL as its owner", probe)
            self._upgrade()
        role = (
            f"DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{USER}') "
            f"THEN ALTER ROLE {USER} {_ROLLBOT_ROLE}; "
            f"ELSE CREATE ROLE {USER} {_ROLLBOT_ROLE}; END IF; END $$"
        )
        self._check(self._psql(SUPERUSER, "postgres", role), f"Cannot set up the '{USER}' role")
        found = self._psql(
            SUPERUSER, "postgres", f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"
        )
        self._check(found, "Cannot query the embedded PostgreSQL")
        if found.output.strip() != "1":
            create = f"CREATE DATABASE {DATABASE} OWNER {USER}"
            self._check(self._psql(SUPERUSER, "postgres", create),
                        f"Cannot create the '{DATABASE}' database")

    def _upgrade(self) -> None:
        log.warning("Upgrading the embedded PostgreSQL made by an older rollbot: "
                    "'%s' becomes a non-superuser role that owns its database", USER)
        has_db = self._psql(USER, "postgres",
                            f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'")
        self._check(has_db, f"Cannot connect to the embedded PostgreSQL as '{USER}' to upgrade it")
        with_database = has_db.output.strip() == "1"
        sql = _upgrade_sql(with_database=with_database)
        database = DATABASE if with_database else "postgres"
        # One -c string is one transaction: a failed upgrade leaves the old layout intact.
        self._check(self._psql(USER, database, sql),
                    "Cannot upgrade the embedded PostgreSQL made by an older rollbot")

    def _psql(self, role: str, database: str, sql: str) -> ToolResult:
        return self._bin.run(
            "psql",
            ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", str(self._sock_dir),
             "-p", str(PORT), "-U", role, "-d", database, "-c", sql],
            timeout=_CLIENT_TIMEOUT_S,
        )

    def _check(self, result: ToolResult, what: str) -> None:
        if result.returncode != 0:
            raise self._failure(what, result)

    def _failure(self, what: str, result: ToolResult) -> StoreError:
        return StoreError(
            self._bin.failure(f"{what} (psql exit status {result.returncode}).", result.output)
        )
