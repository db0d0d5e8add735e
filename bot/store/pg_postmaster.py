"""The embedded cluster's postmaster: whether it lives and on which port, stale locks, its port."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from pathlib import Path

from bot.errors import StoreError

log = logging.getLogger(__name__)

HOST = "127.0.0.1"


def live_postmaster(data_dir: Path) -> tuple[int, int | None] | None:
    """The (pid, port) of this cluster's postmaster if it is alive, else None."""
    try:
        lines = (data_dir / "postmaster.pid").read_text(encoding="utf-8").splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None
    if pid <= 0 or not _is_our_postmaster(pid, data_dir):
        return None
    port: int | None
    try:
        port = int(lines[3])
    except (ValueError, IndexError):
        port = None
    return pid, port


def clear_stale_locks(data_dir: Path, sock_dir: Path) -> None:
    """Remove lock files left by a postmaster that is gone (crash, SIGKILL, reboot)."""
    # PostgreSQL removes its lock files itself only when their PID is unused; after a reboot
    # the PID may belong to an unrelated process, and a killed postmaster may linger as a
    # zombie, and either would block the start. live_postmaster() has just checked that no
    # process of this cluster holds them. PostgreSQL's shared-memory check, keyed on the data
    # directory, still refuses to start while orphaned backends of a killed postmaster live.
    stale = [data_dir / "postmaster.pid"]
    with contextlib.suppress(OSError):
        stale += [p for p in sock_dir.iterdir() if p.name.startswith(".s.PGSQL.")]
    for path in stale:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            log.warning("Removed stale PostgreSQL lock file %s", path)


def choose_port(requested: int | None, root: Path) -> int:
    """The requested port, else the remembered one if free, else a new free one."""
    if requested is not None:
        if not _port_is_free(requested):
            raise StoreError(
                f"Port {requested} on {HOST} is already in use, so the embedded "
                "PostgreSQL cannot listen on it; choose another port."
            )
        return requested
    remembered = remembered_port(root)
    if remembered is not None:
        if _port_is_free(remembered):
            return remembered
        log.warning(
            "Port %d remembered for the embedded PostgreSQL is taken; choosing another",
            remembered,
        )
    return _free_port()


def remembered_port(root: Path) -> int | None:
    """The port the cluster under ``root`` was given the first time, so its DSN stays."""
    try:
        port = int((root / "port").read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None
    return port if 1 <= port <= 65535 else None


def remember_port(root: Path, port: int) -> None:
    if remembered_port(root) == port:
        return
    path = root / "port"
    tmp = path.with_name("port.tmp")
    try:
        tmp.write_text(f"{port}\n", encoding="utf-8")
        # A rename, so a crash never leaves a half-written port behind.
        tmp.replace(path)
    except OSError as err:
        raise StoreError(f"Cannot write {path}: {err}.") from err


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
