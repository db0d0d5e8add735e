"""A PostgreSQL cluster that rollbot runs itself when no ``DATABASE_URL`` is given.

Everything lives under one directory (``root``):

- ``pgdata/``: the cluster, made by ``initdb`` on the first start;
- ``pgsock/``: the Unix socket directory, private to the cluster's owner;
- ``port``: the TCP port chosen the first time, so that later starts keep the same DSN;
- ``postgres.log``: the server's log, whose tail is quoted in every error.

The server listens on 127.0.0.1 only. PostgreSQL refuses to run as root, so when rollbot is root
the server binaries run as the ``postgres`` system user through ``runuser``.

The calls block (``start`` for up to about 30 s); async callers should use ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bot.errors import ConfigError, StoreError

log = logging.getLogger(__name__)

USER = "rollbot"
DATABASE = "rollbot"
HOST = "127.0.0.1"

_PG_ROOT = Path("/usr/lib/postgresql")
_TOOLS = ("initdb", "pg_ctl", "pg_isready", "createdb", "psql")
_SYSTEM_USER = "postgres"
_READY_TIMEOUT_S = 30.0
_INITDB_TIMEOUT_S = 180.0
_PG_CTL_TIMEOUT_S = 60.0
_CLIENT_TIMEOUT_S = 30.0
_LOG_TAIL_LINES = 20
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


@dataclass(frozen=True)
class _Result:
    returncode: int
    output: str


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
        self._bin_dir = _find_bin_dir(bin_dir, self.data_dir)
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
        return self._bin_dir

    @property
    def dsn(self) -> str:
        """The DSN of the rollbot database (``postgresql://rollbot@127.0.0.1:PORT/rollbot``)."""
        port = self._port if self._port is not None else self._remembered_port()
        if port is None:
            raise StoreError(
                f"The embedded PostgreSQL in {self._root} has no port yet; start it first."
            )
        return f"postgresql://{USER}@{HOST}:{port}/{DATABASE}"

    def is_running(self) -> bool:
        """Whether this cluster's postmaster is alive (it may still be starting up)."""
        return self._live_postmaster() is not None

    def start(self) -> str:
        """Create the cluster if needed, start it unless running, wait until ready; return DSN."""
        with self._lock:
            self._prepare_dirs()
            if not (self.data_dir / "PG_VERSION").is_file():
                self._initdb()
            deadline = time.monotonic() + _READY_TIMEOUT_S
            live = self._live_postmaster()
            if live is None:
                self._clear_stale_locks()
                port = self._choose_port()
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
            self._remember_port(port)
            self._wait_ready(port, deadline)
            self._ensure_database(port)
            return self.dsn

    def stop(self) -> None:
        """Stop this cluster (``pg_ctl stop -m fast``); does nothing when it is not running."""
        with self._lock:
            if not (self.data_dir / "PG_VERSION").is_file() or self._live_postmaster() is None:
                return
            args = ["stop", "-D", str(self.data_dir), "-m", "fast", "-w", "-s"]
            wait = ["-t", str(int(_READY_TIMEOUT_S))]
            result = self._run("pg_ctl", [*args, *wait], timeout=_PG_CTL_TIMEOUT_S)
            # pg_ctl also fails when the server exited on its own meanwhile; only a server
            # that is still alive is a failure to stop.
            if result.returncode != 0 and self._live_postmaster() is not None:
                raise StoreError(
                    self._failure(
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
            owner = _system_user()
            _runuser_prefix()  # fail on a missing runuser before changing anything
            # The server runs as 'postgres', which must be able to pass through root to reach
            # pgdata, pgsock and the log; search (x) is enough, nothing in root becomes readable.
            mode = self._root.stat().st_mode
            if not mode & stat.S_IXOTH:
                self._root.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
            # Created here rather than by initdb, so it can be handed to 'postgres' first.
            self.data_dir.mkdir(mode=0o700, exist_ok=True)
            _chown_tree(self.data_dir, owner)
            _chown_tree(self.sock_dir, owner)
            if not self.log_file.exists():
                self.log_file.touch(mode=0o640)
            os.chown(self.log_file, owner.pw_uid, owner.pw_gid)
        except OSError as err:
            raise StoreError(
                f"Cannot prepare the embedded PostgreSQL directory {self._root}: {err}."
            ) from err
        self._check_reachable(owner)

    def _check_reachable(self, owner: pwd.struct_passwd) -> None:
        """Fail clearly when the 'postgres' user cannot reach the data directory."""
        result = self._run_raw(
            "test",
            [*_runuser_prefix(), "test", "-w", str(self.data_dir)],
            timeout=_CLIENT_TIMEOUT_S,
        )
        if result.returncode == 0:
            return
        blocker = next(
            (
                p
                for p in reversed([self._root, *self._root.parents])
                if not _traversable_by(p, owner)
            ),
            None,
        )
        where = (
            f"{blocker} is not traversable by it; run 'chmod o+x {blocker}' or move the directory"
            if blocker is not None
            else "check the permissions of it and of every parent directory"
        )
        raise ConfigError(
            f"PostgreSQL runs as the '{_SYSTEM_USER}' user when rollbot is root, and that user "
            f"cannot write to {self.data_dir}: {where}."
        )

    def _write_cluster_file(self, path: Path, text: str) -> None:
        """Write a file inside pgdata, owned by the cluster's owner and private to it."""
        path.write_text(text, encoding="utf-8")
        path.chmod(0o600)
        if os.geteuid() == 0:
            owner = _system_user()
            os.chown(path, owner.pw_uid, owner.pw_gid)

    # --- initdb, start, readiness --------------------------------------------------------------

    def _initdb(self) -> None:
        """Create the cluster with superuser 'rollbot' and loopback-only trust authentication."""
        log.info("Creating the embedded PostgreSQL cluster in %s", self.data_dir)
        result = self._run(
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
                self._failure(
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
            log_start = _size(self.log_file)
            wait = ["-t", str(max(1, int(deadline - time.monotonic())))]
            result = self._run("pg_ctl", [*args, *wait, "-o", options], timeout=_PG_CTL_TIMEOUT_S)
            if result.returncode == 0:
                return
            # Backends of a killed postmaster keep its shared memory until they notice and exit,
            # and PostgreSQL refuses to start meanwhile to protect the data: wait for them.
            orphans = "pre-existing shared memory block" in _read_end(self.log_file, log_start)
            if orphans and time.monotonic() < deadline and self._live_postmaster() is None:
                time.sleep(0.5)
                continue
            raise StoreError(
                self._failure(
                    f"pg_ctl could not start the embedded PostgreSQL in {self.data_dir} "
                    f"on port {port} (exit status {result.returncode}).",
                    result.output,
                )
            )

    def _wait_ready(self, port: int, deadline: float) -> None:
        """Poll pg_isready over TCP until the server accepts connections or the deadline passes."""
        while True:
            result = self._run(
                "pg_isready",
                ["-q", "-h", HOST, "-p", str(port), "-U", USER, "-d", "postgres", "-t", "3"],
                timeout=10.0,
            )
            if result.returncode == 0:
                return
            if result.returncode == 3:
                raise StoreError(
                    self._failure(
                        "pg_isready rejected its arguments for the embedded PostgreSQL.",
                        result.output,
                    )
                )
            if self._live_postmaster() is None:
                raise StoreError(
                    self._failure(
                        f"The embedded PostgreSQL in {self.data_dir} exited while starting.", ""
                    )
                )
            if time.monotonic() >= deadline:
                raise StoreError(
                    self._failure(
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
        found = self._run(
            "psql",
            ["-X", "-q", "-A", "-t", *conn, "-d", "postgres", "-c", query],
            timeout=_CLIENT_TIMEOUT_S,
        )
        if found.returncode != 0:
            raise StoreError(
                self._failure(
                    f"Cannot query the embedded PostgreSQL on port {port} "
                    f"(psql exit status {found.returncode}).",
                    found.output,
                )
            )
        if found.output.strip() == "1":
            return
        created = self._run("createdb", [*conn, DATABASE], timeout=_CLIENT_TIMEOUT_S)
        if created.returncode != 0:
            raise StoreError(
                self._failure(
                    f"createdb could not create the '{DATABASE}' database in the embedded "
                    f"PostgreSQL (exit status {created.returncode}).",
                    created.output,
                )
            )

    # --- postmaster state ------------------------------------------------------------------------

    def _live_postmaster(self) -> tuple[int, int | None] | None:
        """The (pid, port) of this cluster's postmaster if it is alive, else None."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text(encoding="utf-8").splitlines()
            pid = int(lines[0])
        except (OSError, ValueError, IndexError):
            return None
        if pid <= 0 or not _is_our_postmaster(pid, self.data_dir):
            return None
        port: int | None
        try:
            port = int(lines[3])
        except (ValueError, IndexError):
            port = None
        return pid, port

    def _clear_stale_locks(self) -> None:
        """Remove lock files left by a postmaster that is gone (crash, SIGKILL, reboot)."""
        # PostgreSQL removes its lock files itself only when their PID is unused; after a reboot
        # the PID may belong to an unrelated process, and a killed postmaster may linger as a
        # zombie, and either would block the start. _live_postmaster() has just checked that no
        # process of this cluster holds them. PostgreSQL's shared-memory check, keyed on the data
        # directory, still refuses to start while orphaned backends of a killed postmaster live.
        stale = [self.data_dir / "postmaster.pid"]
        with contextlib.suppress(OSError):
            stale += [p for p in self.sock_dir.iterdir() if p.name.startswith(".s.PGSQL.")]
        for path in stale:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                log.warning("Removed stale PostgreSQL lock file %s", path)

    # --- port ------------------------------------------------------------------------------------

    def _choose_port(self) -> int:
        """The requested port, else the remembered one if free, else a new free one."""
        if self._requested_port is not None:
            if not _port_is_free(self._requested_port):
                raise StoreError(
                    f"Port {self._requested_port} on {HOST} is already in use, so the embedded "
                    "PostgreSQL cannot listen on it; choose another port."
                )
            return self._requested_port
        remembered = self._remembered_port()
        if remembered is not None:
            if _port_is_free(remembered):
                return remembered
            log.warning(
                "Port %d remembered for the embedded PostgreSQL is taken; choosing another",
                remembered,
            )
        return _free_port()

    def _remembered_port(self) -> int | None:
        try:
            port = int((self._root / "port").read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            return None
        return port if 1 <= port <= 65535 else None

    def _remember_port(self, port: int) -> None:
        if self._remembered_port() == port:
            return
        path = self._root / "port"
        tmp = path.with_name("port.tmp")
        try:
            tmp.write_text(f"{port}\n", encoding="utf-8")
            # A rename, so a crash never leaves a half-written port behind.
            tmp.replace(path)
        except OSError as err:
            raise StoreError(f"Cannot write {path}: {err}.") from err

    # --- running the binaries --------------------------------------------------------------------

    def _run(self, tool: str, args: list[str], *, timeout: float) -> _Result:
        """Run one PostgreSQL binary, as 'postgres' when rollbot is root."""
        command = [str(self._bin_dir / tool), *args]
        if os.geteuid() == 0:
            command = [*_runuser_prefix(), *command]
        return self._run_raw(tool, command, timeout=timeout)

    def _run_raw(self, name: str, command: list[str], *, timeout: float) -> _Result:
        """Run a command with a timeout, output captured; StoreError if it cannot run or hangs."""
        # PG* variables (PGHOST, PGPORT, PGDATA, PGOPTIONS...) would redirect the tools away
        # from this cluster; C messages keep the quoted output readable and predictable.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        try:
            # A session of its own, so a timeout can stop the command and its children
            # (runuser's child survives runuser's death); pg_ctl detaches the server itself.
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=self._root,
                env=env,
                start_new_session=True,
            )
        except OSError as err:
            raise StoreError(f"Cannot run {name}: {err}.") from err
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise StoreError(
                self._failure(f"{name} did not finish within {timeout:.0f} s and was stopped.", "")
            ) from None
        return _Result(proc.returncode, out.decode("utf-8", errors="replace"))

    def _failure(self, sentence: str, output: str) -> str:
        """An error message: the sentence, the command's output, then the log's last lines."""
        parts = [sentence]
        out_tail = _tail(output)
        if out_tail:
            parts.append(f"Output:\n{out_tail}")
        log_tail = _tail(_read_end(self.log_file))
        if log_tail:
            parts.append(f"Last lines of {self.log_file}:\n{log_tail}")
        return "\n".join(parts)


# --- helpers -------------------------------------------------------------------------------------


def _find_bin_dir(explicit: Path | None, data_dir: Path) -> Path:
    """The PostgreSQL binaries: explicit, else $ROLLBOT_PG_BIN, else the installed ones."""
    env = os.environ.get("ROLLBOT_PG_BIN")
    if explicit is not None:
        chosen, source = Path(explicit), "bin_dir"
    elif env:
        chosen, source = Path(env), "ROLLBOT_PG_BIN"
    else:
        found = _installed_bin_dir(data_dir)
        if found is None:
            raise ConfigError(
                f"PostgreSQL server binaries not found (no {_PG_ROOT}/*/bin/initdb): set "
                "DATABASE_URL to use an existing database, set ROLLBOT_PG_BIN, or install "
                "postgresql."
            )
        chosen, source = found, "installed"
    missing = [t for t in _TOOLS if not os.access(chosen / t, os.X_OK)]
    if missing:
        raise ConfigError(
            f"PostgreSQL server binaries not found: {chosen} ({source}) lacks "
            f"{', '.join(missing)}; set DATABASE_URL or install postgresql."
        )
    return chosen


def _installed_bin_dir(data_dir: Path) -> Path | None:
    """The binaries matching an existing cluster's version, else the newest installed ones."""
    # A cluster only runs with its own major version: after a newer PostgreSQL is installed
    # next to the old one, keep using the old one for the existing cluster.
    with contextlib.suppress(OSError):
        version = (data_dir / "PG_VERSION").read_text(encoding="utf-8").strip()
        own = _PG_ROOT / version / "bin"
        if (own / "initdb").is_file():
            return own
    candidates: list[tuple[tuple[int, ...], Path]] = []
    with contextlib.suppress(OSError):
        for d in _PG_ROOT.iterdir():
            if re.fullmatch(r"\d+(\.\d+)*", d.name) and (d / "bin" / "initdb").is_file():
                candidates.append((tuple(int(x) for x in d.name.split(".")), d / "bin"))
    return max(candidates)[1] if candidates else None


def _system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(_SYSTEM_USER)
    except KeyError:
        raise ConfigError(
            f"rollbot runs as root, and PostgreSQL refuses to; it needs the '{_SYSTEM_USER}' "
            "system user to run the embedded PostgreSQL (install postgresql, or set DATABASE_URL)."
        ) from None


def _runuser_prefix() -> list[str]:
    runuser = shutil.which("runuser") or next(
        (p for p in ("/usr/sbin/runuser", "/sbin/runuser") if os.access(p, os.X_OK)), None
    )
    if runuser is None:
        raise ConfigError(
            "rollbot runs as root and needs 'runuser' (util-linux) to run PostgreSQL as the "
            f"'{_SYSTEM_USER}' user; install util-linux or set DATABASE_URL."
        )
    return [runuser, "-u", _SYSTEM_USER, "--"]


def _chown_tree(top: Path, owner: pwd.struct_passwd) -> None:
    """``chown -R`` without following symlinks, touching only entries not already owned."""
    uid, gid = owner.pw_uid, owner.pw_gid

    def fix(path: str) -> None:
        st = os.lstat(path)
        if (st.st_uid, st.st_gid) != (uid, gid):
            os.lchown(path, uid, gid)

    fix(str(top))
    for dirpath, dirnames, filenames in os.walk(top):
        for name in (*dirnames, *filenames):
            fix(os.path.join(dirpath, name))


def _traversable_by(path: Path, user: pwd.struct_passwd) -> bool:
    """Whether ``user`` may search directory ``path``, judged by its mode bits (ACLs ignored)."""
    try:
        st = path.stat()
    except OSError:
        return False
    if st.st_uid == user.pw_uid:
        return bool(st.st_mode & stat.S_IXUSR)
    groups = {user.pw_gid, *os.getgrouplist(user.pw_name, user.pw_gid)}
    if st.st_gid in groups:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _is_our_postmaster(pid: int, data_dir: Path) -> bool:
    """Whether ``pid`` is alive and is a postmaster serving ``data_dir``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, but another user's: the checks below decide
    proc = Path("/proc") / str(pid)
    if not Path("/proc/self").exists():
        return True  # no procfs: the signal check is all we have
    try:
        # The state follows the command name, which may itself contain ')'.
        state = proc.joinpath("stat").read_text(encoding="utf-8").rpartition(")")[2].split()[0]
        if state in ("Z", "X"):
            return False  # killed and not yet reaped: holds no files, serves nothing
    except (OSError, IndexError):
        return False
    try:
        # The postmaster changes into its data directory before it writes postmaster.pid.
        return Path(os.readlink(proc / "cwd")) == data_dir.resolve()
    except PermissionError:
        pass
    except OSError:
        return False
    try:
        argv0 = proc.joinpath("cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return False
    return os.path.basename(argv0) in (b"postgres", b"postmaster")


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # PostgreSQL binds with SO_REUSEADDR too, so our own old TIME_WAIT connections do not
        # count as "in use" while a listener does.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
    return port


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_end(path: Path, start: int = 0, size: int = 65536) -> str:
    """The end of a text file: from ``start``, at most its last ``size`` bytes."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(start, f.tell() - size))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _tail(text: str, lines: int = _LOG_TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
