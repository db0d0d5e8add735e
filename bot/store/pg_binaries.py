"""The PostgreSQL binaries of the embedded cluster: finding them and running them (as 'postgres').

PostgreSQL refuses to run as root, so when rollbot is root every binary runs as the ``postgres``
system user through ``runuser``, and the directories it needs are handed to that user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bot.errors import ConfigError, StoreError

SYSTEM_USER = "postgres"

_PG_ROOT = Path("/usr/lib/postgresql")
_TOOLS = ("initdb", "pg_ctl", "pg_isready", "psql")
_LOG_TAIL_LINES = 20


@dataclass(frozen=True)
class ToolResult:
    returncode: int
    output: str


class PgBinaries:
    """One cluster's binaries, run from its directory; their errors quote its log."""

    def __init__(self, bin_dir: Path, *, cwd: Path, log_file: Path) -> None:
        self.bin_dir = bin_dir
        self._cwd = cwd
        self._log_file = log_file

    def run(self, tool: str, args: list[str], *, timeout: float) -> ToolResult:
        """Run one PostgreSQL binary, as 'postgres' when rollbot is root."""
        command = [str(self.bin_dir / tool), *args]
        if os.geteuid() == 0:
            command = [*runuser_prefix(), *command]
        return self.run_raw(tool, command, timeout=timeout)

    def run_raw(self, name: str, command: list[str], *, timeout: float) -> ToolResult:
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
                cwd=self._cwd,
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
                self.failure(f"{name} did not finish within {timeout:.0f} s and was stopped.", "")
            ) from None
        return ToolResult(proc.returncode, out.decode("utf-8", errors="replace"))

    def check_reachable(self, data_dir: Path, owner: pwd.struct_passwd, *,
                        timeout: float) -> None:
        """Fail clearly when the 'postgres' user cannot reach the data directory."""
        result = self.run_raw(
            "test",
            [*runuser_prefix(), "test", "-w", str(data_dir)],
            timeout=timeout,
        )
        if result.returncode == 0:
            return
        blocker = next(
            (
                p
                for p in reversed([self._cwd, *self._cwd.parents])
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
            f"PostgreSQL runs as the '{SYSTEM_USER}' user when rollbot is root, and that user "
            f"cannot write to {data_dir}: {where}."
        )

    def failure(self, sentence: str, output: str) -> str:
        """An error message: the sentence, the command's output, then the log's last lines."""
        parts = [sentence]
        out_tail = _tail(output)
        if out_tail:
            parts.append(f"Output:\n{out_tail}")
        log_tail = _tail(read_end(self._log_file))
        if log_tail:
            parts.append(f"Last lines of {self._log_file}:\n{log_tail}")
        return "\n".join(parts)


def find_bin_dir(explicit: Path | None, data_dir: Path) -> Path:
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


def system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise ConfigError(
            f"rollbot runs as root, and PostgreSQL refuses to; it needs the '{SYSTEM_USER}' "
            "system user to run the embedded PostgreSQL (install postgresql, or set DATABASE_URL)."
        ) from None


def runuser_prefix() -> list[str]:
    runuser = shutil.which("runuser") or next(
        (p for p in ("/usr/sbin/runuser", "/sbin/runuser") if os.access(p, os.X_OK)), None
    )
    if runuser is None:
        raise ConfigError(
            "rollbot runs as root and needs 'runuser' (util-linux) to run PostgreSQL as the "
            f"'{SYSTEM_USER}' user; install util-linux or set DATABASE_URL."
        )
    return [runuser, "-u", SYSTEM_USER, "--"]


def chown_tree(top: Path, owner: pwd.struct_passwd) -> None:
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


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def read_end(path: Path, start: int = 0, size: int = 65536) -> str:
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
