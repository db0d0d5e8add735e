"""The embedded cluster's postmaster: whether it lives, where it listens, its stale locks."""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Postmaster:
    """A live postmaster, as its postmaster.pid describes it."""

    pid: int
    socket_dir: Path | None  # None when it has no Unix socket (or the file does not say)
    tcp_address: str  # '' when it listens on no TCP address, as rollbot's own servers do


def live_postmaster(data_dir: Path) -> Postmaster | None:
    """This cluster's postmaster if it is alive, else None."""
    try:
        lines = (data_dir / "postmaster.pid").read_text(encoding="utf-8").splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None
    if pid <= 0 or not _is_our_postmaster(pid, data_dir):
        return None
    # Lines 5 and 6: the first socket directory and the first TCP address (empty for none).
    fields = [*lines[4:6], "", ""]
    socket_dir = Path(fields[0].strip()) if fields[0].strip() else None
    return Postmaster(pid=pid, socket_dir=socket_dir, tcp_address=fields[1].strip())


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
