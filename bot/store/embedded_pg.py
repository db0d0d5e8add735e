"""A PostgreSQL cluster that rollbot runs itself when no ``DATABASE_URL`` is given.

Everything but the socket lives under one directory (``root``):

- ``pgdata/``: the cluster, made by ``initdb`` on the first start;
- ``postgres.log``: the server's log, whose tail is quoted in every error.

The server listens on no TCP address, only on a Unix socket in a short private directory outside
``root`` (``bot/store/pg_socket_dir.py``), so any ``root`` depth works. Connections authenticate by
``peer``, and rollbot's role is not a superuser (``bot/store/pg_access.py``). PostgreSQL refuses to
run as root, so when rollbot is root the server binaries run as the ``postgres`` system user
(``bot/store/pg_binaries.py``); what the postmaster's files say (alive? where?) is read in
``bot/store/pg_postmaster.py``.

The calls block (``start`` for up to about 30 s); async callers should use ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import re
import shlex
import stat
import threading
import time
from pathlib import Path

from bot.errors import ConfigError, StoreError
from bot.store import pg_access
from bot.store.pg_access import HBA, PORT, SUPERUSER, ClusterAccess, ident_map
from bot.store.pg_binaries import (
    PgBinaries,
    chown_tree,
    file_size,
    find_bin_dir,
    read_end,
    runuser_prefix,
    system_user,
)
from bot.store.pg_postmaster import clear_stale_locks, live_postmaster
from bot.store.pg_socket_dir import check_private_dir, ensure_private_dir, socket_dir_for

log = logging.getLogger(__name__)

USER = pg_access.USER
DATABASE = pg_access.DATABASE

_READY_TIMEOUT_S = 30.0
_INITDB_TIMEOUT_S = 180.0
_PG_CTL_TIMEOUT_S = 60.0
_CLIENT_TIMEOUT_S = 30.0
# pg_ctl pastes -D and -l into a /bin/sh command line inside double quotes without escaping:
# such characters would change their meaning.
_UNSAFE_PATH_CHARS = re.compile(r'["$`\\,\n\r\0]')


class EmbeddedPostgres:
    """A PostgreSQL cluster owned by rollbot, in its own directory."""

    def __init__(self, root: Path, *, bin_dir: Path | None = None) -> None:
        """Describe the cluster under ``root``; nothing is created or started yet."""
        self._root = Path(root).expanduser().resolve()
        if _UNSAFE_PATH_CHARS.search(str(self._root)):
            raise ConfigError(
                f"The embedded PostgreSQL directory {str(self._root)!r} contains a character "
                '(" $ ` \\ , or a line break) that pg_ctl cannot pass safely; choose another path.'
            )
        self._sock_dir = socket_dir_for(self._root)
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
        """The private Unix socket directory (where a running server listens, if any)."""
        live = live_postmaster(self.data_dir)
        if live is not None and live.socket_dir is not None:
            return live.socket_dir
        return self._sock_dir

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
        """The rollbot database over the socket (``postgresql://rollbot@%2Ftmp%2F…:5432/rollbot``)."""
        return pg_access.dsn(self.sock_dir)

    def is_running(self) -> bool:
        """Whether this cluster's postmaster is alive (it may still be starting up)."""
        return live_postmaster(self.data_dir) is not None

    def start(self) -> str:
        """Create the cluster if needed, start it unless running, wait until ready; return DSN."""
        with self._lock:
            owner = _cluster_owner()
            self._prepare_dirs(owner)
            if not (self.data_dir / "PG_VERSION").is_file():
                self._initdb()
            deadline = time.monotonic() + _READY_TIMEOUT_S
            live = live_postmaster(self.data_dir)
            if live is None:
                ensure_private_dir(self._sock_dir, owner)
                clear_stale_locks(self.data_dir, self._sock_dir)
                self._write_access_files(owner)
                self._pg_ctl_start(deadline)
                sock_dir = self._sock_dir
            elif live.tcp_address or live.socket_dir is None:
                raise StoreError(
                    f"The embedded PostgreSQL in {self.data_dir} is running (PID {live.pid}) "
                    f"with an older rollbot's settings (listening on TCP "
                    f"{live.tcp_address or '?'}, open to every local account). Stop it, or the "
                    f"rollbot that started it ('pg_ctl stop -D {self.data_dir}' as "
                    f"'{owner.pw_name}'), then start rollbot again: it upgrades the cluster."
                )
            else:
                # Already running (started earlier, maybe by another rollbot process): where it
                # listens wins, once it is known to be private.
                sock_dir = live.socket_dir
                check_private_dir(sock_dir, owner)
            self._wait_ready(sock_dir, deadline)
            ClusterAccess(self._bin, sock_dir).ensure()
            # Older rollbots remembered a TCP port here; nothing reads it any more.
            with contextlib.suppress(OSError):
                (self._root / "port").unlink()
            return pg_access.dsn(sock_dir)

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

    def _prepare_dirs(self, owner: pwd.struct_passwd) -> None:
        """Create root (and pgdata when root) with the owner and modes PostgreSQL needs."""
        try:
            self._root.mkdir(parents=True, exist_ok=True)
            if os.geteuid() != 0:
                return
            runuser_prefix()  # fail on a missing runuser before changing anything
            # The server runs as 'postgres', which must be able to pass through root to reach
            # pgdata and the log; search (x) is enough, nothing in root becomes readable.
            mode = self._root.stat().st_mode
            if not mode & stat.S_IXOTH:
                self._root.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
            # Created here rather than by initdb, so it can be handed to 'postgres' first.
            self.data_dir.mkdir(mode=0o700, exist_ok=True)
            chown_tree(self.data_dir, owner)
            if not self.log_file.exists():
                self.log_file.touch(mode=0o640)
            os.chown(self.log_file, owner.pw_uid, owner.pw_gid)
        except OSError as err:
            raise StoreError(
                f"Cannot prepare the embedded PostgreSQL directory {self._root}: {err}."
            ) from err
        self._bin.check_reachable(self.data_dir, owner, timeout=_CLIENT_TIMEOUT_S)

    def _write_access_files(self, owner: pwd.struct_passwd) -> None:
        """pg_hba.conf and pg_ident.conf, rewritten before every start (this upgrades old ones)."""
        client = _os_user_name(os.geteuid())
        try:
            self._write_cluster_file(self.data_dir / "pg_hba.conf", HBA)
            self._write_cluster_file(self.data_dir / "pg_ident.conf",
                                     ident_map(owner=owner.pw_name, client=client))
        except OSError as err:
            raise StoreError(
                f"Cannot write the access rules in {self.data_dir}: {err}."
            ) from err

    def _write_cluster_file(self, path: Path, text: str) -> None:
        """Write a file inside pgdata, owned by the cluster's owner and private to it."""
        path.write_text(text, encoding="utf-8")
        path.chmod(0o600)
        if os.geteuid() == 0:
            owner = system_user()
            os.chown(path, owner.pw_uid, owner.pw_gid)

    # --- initdb, start, readiness --------------------------------------------------------------

    def _initdb(self) -> None:
        """Create the cluster with bootstrap superuser 'postgres' and peer authentication."""
        log.info("Creating the embedded PostgreSQL cluster in %s", self.data_dir)
        result = self._bin.run(
            "initdb",
            # Checksums make silent on-disk corruption of the audit trail detectable.
            [
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--auth-local=peer",
                "--auth-host=reject",
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

    def _pg_ctl_start(self, deadline: float) -> None:
        """Start the postmaster on its private socket; wait until the deadline for pg_ctl."""
        log.info("Starting the embedded PostgreSQL in %s on %s", self.data_dir, self._sock_dir)
        options = shlex.join(
            [
                "-p",
                str(PORT),
                # No TCP at all: the socket directory's mode and peer authentication decide who
                # may connect, which a loopback port cannot.
                "-c",
                "listen_addresses=",
                "-c",
                f"unix_socket_directories={self._sock_dir}",
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
                    f"(exit status {result.returncode}).",
                    result.output,
                )
            )

    def _wait_ready(self, sock_dir: Path, deadline: float) -> None:
        """Poll pg_isready on the socket until the server accepts connections or time is up."""
        while True:
            result = self._bin.run(
                "pg_isready",
                ["-q", "-h", str(sock_dir), "-p", str(PORT), "-U", SUPERUSER, "-d", "postgres",
                 "-t", "3"],
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


def _cluster_owner() -> pwd.struct_passwd:
    """The OS user the server runs as: 'postgres' when rollbot is root, else rollbot's own."""
    if os.geteuid() == 0:
        return system_user()
    return pwd.getpwnam(_os_user_name(os.geteuid()))


def _os_user_name(uid: int) -> str:
    """The name peer authentication will see for ``uid``; it needs one."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        raise ConfigError(
            f"rollbot runs as uid {uid}, which has no user name (no /etc/passwd entry), and the "
            "embedded PostgreSQL authenticates local users by name; add the user, or set "
            "DATABASE_URL."
        ) from None
