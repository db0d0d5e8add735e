"""A PostgreSQL cluster that rollbot runs itself when no ``DATABASE_URL`` is given.

Everything lives under one directory (``root``):

- ``pgdata/``: the cluster, made by ``initdb`` on the first start;
- ``pgsock/``: the Unix socket directory, private to the cluster's owner;
- ``port``: the TCP port chosen the first time, so that later starts keep the same DSN;
- ``postgres.log``: the server's log, whose tail is quoted in every error.

The server listens on 127.0.0.1 only. PostgreSQL refuses to run as root, so when rollbot is root
the server binaries run as the ``postgres`` system user (``bot/store/pg_binaries.py``); what the
postmaster's files say (alive? which port?) is read in ``bot/store/pg_postmaster.py``.

The calls block (``start`` for up to about 30 s); async callers should use ``asyncio.to_thread``.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import stat
import threading
import time
from pathlib import Path

from bot.errors import ConfigError, StoreError
from bot.store.pg_binaries import (
    PgBinaries,
    chown_tree,
    file_size,
    find_bin_dir,
    read_end,
    runuser_prefix,
    system_user,
)
from bot.store.pg_postmaster import (
    HOST,
    choose_port,
    clear_stale_locks,
    live_postmaster,
    remember_port,
    remembered_port,
)

log = logging.getLogger(__name__)

USER = "rollbot"
DATABASE = "rollbot"

_READY_TIMEOUT_S = 30.0
_INITDB_TIMEOUT_S = 180.0
_PG_CTL_TIMEOUT_S = 60.0
_CLIENT_TIMEOUT_S = 30.0
# sun_path is 108 bytes on Linux, including the trailing NUL.
_MAX_SOCKET_PATH = 107
# pg_ctl pastes -D and -l into a /bin/sh command line inside double quotes without escaping, and
# unix_socket_directories is a comma-separated list: such characters would change their meaning.
_UNSAFE_PATH_CHARS = re.compile(r'["$`\\,\n\r\0]')

# Password-less "trust" is acceptable here because the cluster listens on 127.0.0.1 only (never on
# a network), its socket directory is private, and it is owned by the user running rollbot. The
# limit of that: any account on this machine can reach 127.0.0.1, so use DATABASE_URL with a
# password-protected server on a host shared with untrusted local users.
_PG_HBA = """\
# Written by rollbot: trust, for the loopback-only cluster it owns; nothing else is accepted.
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 trust
host    all       all   127.0.0.1/32  trust
"""


class EmbeddedPostgres:
    """A PostgreSQL cluster owned by rollbot, in its own directory."""

    def __init__(self, root: Path, *, bin_dir: Path | None = None, port: int | None = None) -> None:
        """Describe the cluster under ``root``; nothing is created or started yet."""
        self._root = Path(root).expanduser().resolve()
        if _UNSAFE_PATH_CHARS.search(str(self._root)):
            raise ConfigError(
                f"The embedded PostgreSQL directory {str(self._root)!r} contains a character "
                '(" $ ` \\ , or a line break) that pg_ctl cannot pass safely; choose another path.'
            )
        if port is not None and not 1 <= port <= 65535:
            raise ConfigError(f"The embedded PostgreSQL port {port} is not between 1 and 65535.")
        socket_path = self.sock_dir / ".s.PGSQL.65535"
        if len(os.fsencode(socket_path)) > _MAX_SOCKET_PATH:
            raise ConfigError(
                f"The embedded PostgreSQL directory {self._root} is too deep: its socket path "
                f"would exceed {_MAX_SOCKET_PATH} bytes. Choose a shorter data directory."
            )
        self._requested_port = port
        self._port: int | None = port
        self._bin = PgBinaries(find_bin_dir(bin_dir, self.data_dir), cwd=self._root,
                               log_file=self.log_file)
        # start() and stop() may be called from worker threads; one at a time per instance.
        self._lock = threading.Lock()

    @property
    def root(self) -> Path:
        """The directory that holds everything the cluster needs."""
        return self._root

    @property
    def data_dir(self) -> Path:
        """The cluster directory (``PGDATA``)."""
        return self._root / "pgdata"

    @property
    def sock_dir(self) -> Path:
        """The Unix socket directory."""
        return self._root / "pgsock"

    @property
    def log_file(self) -> Path:
        """The server's log file."""
        return self._root / "postgres.log"

    @property
    def bin_dir(self) -> Path:
        """The directory of the PostgreSQL binaries in use."""
        return self._bin.bin_dir

    @property
    def dsn(self) -> str:
        """The DSN of the rollbot database (``postgresql://rollbot@127.0.0.1:PORT/rollbot``)."""
        port = self._port if self._port is not None else remembered_port(self._root)
        if port is None:
            raise StoreError(
                f"The embedded PostgreSQL in {self._root} has no port yet; start it first."
            )
        return f"postgresql://{USER}@{HOST}:{port}/{DATABASE}"

    def is_running(self) -> bool:
        """Whether this cluster's postmaster is alive (it may still be starting up)."""
        return live_postmaster(self.data_dir) is not None

    def start(self) -> str:
        """Create the cluster if needed, start it unless running, wait until ready; return DSN."""
        with self._lock:
            self._prepare_dirs()
            if not (self.data_dir / "PG_VERSION").is_file():
                self._initdb()
            deadline = time.monotonic() + _READY_TIMEOUT_S
            live = live_postmaster(self.data_dir)
            if live is None:
                clear_stale_locks(self.data_dir, self.sock_dir)
                port = choose_port(self._requested_port, self._root)
                self._pg_ctl_start(port, deadline)
            elif live[1] is not None:
                # Already running (started earlier, maybe by another rollbot process): its port
                # wins over a requested or remembered one, since that is where it listens.
                port = live[1]
            else:
                raise StoreError(
                    f"The embedded PostgreSQL in {self.data_dir} is running (PID {live[0]}) but "
                    "its postmaster.pid does not tell its port; stop it and start rollbot again."
                )
            self._port = port
            remember_port(self._root, port)
            self._wait_ready(port, deadline)
            self._ensure_database(port)
            return self.dsn

    def stop(self) -> None:
        """Stop this cluster (``pg_ctl stop -m fast``); does nothing when it is not running."""
        with self._lock:
            created = (self.data_dir / "PG_VERSION").is_file()
            if not created or live_postmaster(self.data_dir) is None:
                return
            args = ["stop", "-D", str(self.data_dir), "-m", "fast", "-w", "-s"]
            wait = ["-t", str(int(_READY_TIMEOUT_S))]
            result = self._bin.run("pg_ctl", [*args, *wait], timeout=_PG_CTL_TIMEOUT_S)
            # pg_ctl also fails when the server exited on its own meanwhile; only a server
            # that is still alive is a failure to stop.
            if result.returncode != 0 and live_postmaster(self.data_dir) is not None:
                raise StoreError(
                    self._bin.failure(
                        f"pg_ctl could not stop the embedded PostgreSQL in {self.data_dir} "
                        f"(exit status {result.returncode}).",
                        result.output,
                    )
                )

    # --- directories and ownership -------------------------------------------------------------

    def _prepare_dirs(self) -> None:
        """Create root, pgsock (and pgdata when root) with the owner and modes PostgreSQL needs."""
        try:
            self._root.mkdir(parents=True, exist_ok=True)
            self.sock_dir.mkdir(mode=0o700, exist_ok=True)
            if os.geteuid() != 0:
                return
            owner = system_user()
            runuser_prefix()  # fail on a missing runuser before changing anything
            # The server runs as 'postgres', which must be able to pass through root to reach
            # pgdata, pgsock and the log; search (x) is enough, nothing in root becomes readable.
            mode = self._root.stat().st_mode
            if not mode & stat.S_IXOTH:
                self._root.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
            # Created here rather than by initdb, so it can be handed to 'postgres' first.
            self.data_dir.mkdir(mode=0o700, exist_ok=True)
            chown_tree(self.data_dir, owner)
            chown_tree(self.sock_dir, owner)
            if not self.log_file.exists():
                self.log_file.touch(mode=0o640)
            os.chown(self.log_file, owner.pw_uid, owner.pw_gid)
        except OSError as err:
            raise StoreError(
                f"Cannot prepare the embedded PostgreSQL directory {self._root}: {err}."
            ) from err
        self._bin.check_reachable(self.data_dir, owner, timeout=_CLIENT_TIMEOUT_S)

    def _write_cluster_file(self, path: Path, text: str) -> None:
        """Write a file inside pgdata, owned by the cluster's owner and private to it."""
        path.write_text(text, encoding="utf-8")
        path.chmod(0o600)
        if os.geteuid() == 0:
            owner = system_user()
            os.chown(path, owner.pw_uid, owner.pw_gid)

    # --- initdb, start, readiness --------------------------------------------------------------

    def _initdb(self) -> None:
        """Create the cluster with superuser 'rollbot' and loopback-only trust authentication."""
        log.info("Creating the embedded PostgreSQL cluster in %s", self.data_dir)
        result = self._bin.run(
            "initdb",
            # Checksums make silent on-disk corruption of the audit trail detectable.
            [
                "-D",
                str(self.data_dir),
                "-U",
                USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--data-checksums",
            ],
            timeout=_INITDB_TIMEOUT_S,
        )
        if result.returncode != 0:
            raise StoreError(
                self._bin.failure(
                    f"initdb could not create the embedded PostgreSQL cluster in {self.data_dir} "
                    f"(exit status {result.returncode}).",
                    result.output,
                )
            )
        try:
            # initdb's own pg_hba.conf also trusts ::1 and replication; allow only what we use.
            self._write_cluster_file(self.data_dir / "pg_hba.conf", _PG_HBA)
        except OSError as err:
            raise StoreError(f"Cannot write {self.data_dir / 'pg_hba.conf'}: {err}.") from err

    def _pg_ctl_start(self, port: int, deadline: float) -> None:
        """Start the postmaster on ``port`` and wait until the deadline for pg_ctl to see it up."""
        log.info("Starting the embedded PostgreSQL in %s on %s:%d", self.data_dir, HOST, port)
        options = shlex.join(
            [
                "-p",
                str(port),
                "-c",
                f"listen_addresses={HOST}",
                "-c",
                f"unix_socket_directories={self.sock_dir}",
            ]
        )
        args = ["start", "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-s"]
        while True:
            log_start = file_size(self.log_file)
            wait = ["-t", str(max(1, int(deadline - time.monotonic())))]
            result = self._bin.run("pg_ctl", [*args, *wait, "-o", options],
                                   timeout=_PG_CTL_TIMEOUT_S)
            if result.returncode == 0:
                return
            # Backends of a killed postmaster keep its shared memory until they notice and exit,
            # and PostgreSQL refuses to start meanwhile to protect the data: wait for them.
            orphans = "pre-existing shared memory block" in read_end(self.log_file, log_start)
            if orphans and time.monotonic() < deadline and live_postmaster(self.data_dir) is None:
                time.sleep(0.5)
                continue
            raise StoreError(
                self._bin.failure(
                    f"pg_ctl could not start the embedded PostgreSQL in {self.data_dir} "
                    f"on port {port} (exit status {result.returncode}).",
                    result.output,
                )
            )

    def _wait_ready(self, port: int, deadline: float) -> None:
        """Poll pg_isready over TCP until the server accepts connections or the deadline passes."""
        while True:
            result = self._bin.run(
                "pg_isready",
                ["-q", "-h", HOST, "-p", str(port), "-U", USER, "-d", "postgres", "-t", "3"],
                timeout=10.0,
            )
            if result.returncode == 0:
                return
            if result.returncode == 3:
                raise StoreError(
                    self._bin.failure(
                        "pg_isready rejected its arguments for the embedded PostgreSQL.",
                        result.output,
                    )
                )
            if live_postmaster(self.data_dir) is None:
                raise StoreError(
                    self._bin.failure(
                        f"The embedded PostgreSQL in {self.data_dir} exited while starting.", ""
                    )
                )
            if time.monotonic() >= deadline:
                raise StoreError(
                    self._bin.failure(
                        f"The embedded PostgreSQL in {self.data_dir} was not ready within "
                        f"{_READY_TIMEOUT_S:.0f} s.",
                        "",
                    )
                )
            time.sleep(0.2)

    def _ensure_database(self, port: int) -> None:
        """Create the 'rollbot' database unless it exists (it is missing after initdb)."""
        conn = ["-h", HOST, "-p", str(port), "-U", USER]
        query = f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"
        found = self._bin.run(
            "psql",
            ["-X", "-q", "-A", "-t", *conn, "-d", "postgres", "-c", query],
            timeout=_CLIENT_TIMEOUT_S,
        )
        if found.returncode != 0:
            raise StoreError(
                self._bin.failure(
                    f"Cannot query the embedded PostgreSQL on port {port} "
                    f"(psql exit status {found.returncode}).",
                    found.output,
                )
            )
        if found.output.strip() == "1":
            return
        created = self._bin.run("createdb", [*conn, DATABASE], timeout=_CLIENT_TIMEOUT_S)
        if created.returncode != 0:
            raise StoreError(
                self._bin.failure(
                    f"createdb could not create the '{DATABASE}' database in the embedded "
                    f"PostgreSQL (exit status {created.returncode}).",
                    created.output,
                )
            )
