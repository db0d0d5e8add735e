"""The embedded cluster's private Unix socket directory: short, 0700, owned by the cluster's owner.

The socket lives outside the data directory, so any data-directory depth works (``sun_path`` holds
107 bytes): under ``$XDG_RUNTIME_DIR`` when it is a proper one of ours, else in the system temp
directory as ``rollbot-<uid>-<hash of the data directory>``. The name is predictable, so a directory
found there is used only when it is ours and private; anything else is refused, never adopted.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import stat
import tempfile
from pathlib import Path

from bot.errors import ConfigError

# sun_path is 108 bytes on Linux, including the trailing NUL.
MAX_SOCKET_PATH = 107
# The socket is named after the port even when nothing listens on TCP.
SOCKET_NAME = ".s.PGSQL.5432"
# unix_socket_directories is a comma-separated list, and pg_ctl pastes options into a /bin/sh
# command line: such characters would change their meaning.
_UNSAFE = re.compile(r'[^A-Za-z0-9_./+@:=-]')


def socket_dir_for(root: Path) -> Path:
    """Where the cluster under ``root`` keeps its socket (not created here)."""
    digest = hashlib.sha256(os.fsencode(root)).hexdigest()[:12]
    candidates = []
    runtime = _own_runtime_dir()
    if runtime is not None:
        candidates.append(runtime / f"rollbot-{digest}")
    # The uid in the name keeps two users of one data directory (say root, then a service
    # account) from colliding on one name in the shared temp directory.
    name = f"rollbot-{os.geteuid()}-{digest}"
    candidates += [Path(tempfile.gettempdir()) / name, Path("/tmp") / name]  # noqa: S108 (checked)
    for candidate in candidates:
        if _fits(candidate):
            return candidate
    raise ConfigError(
        f"No short enough directory for the embedded PostgreSQL's socket ({candidates[-1]} is "
        "too long or holds unusual characters); set TMPDIR to a short path such as /tmp."
    )


def ensure_private_dir(path: Path, owner: pwd.struct_passwd) -> None:
    """Create ``path`` 0700 for ``owner``, or check that the existing one is exactly that."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as err:
        raise ConfigError(
            f"Cannot create {path} for the embedded PostgreSQL's socket: {err.strerror}."
        ) from err
    else:
        os.chmod(path, 0o700)  # whatever the umask says
    try:
        st = os.lstat(path)
    except OSError as err:
        raise ConfigError(f"Cannot inspect {path}: {err.strerror}.") from err
    handed_over = owner.pw_uid != 0 and os.geteuid() == 0
    if handed_over and stat.S_ISDIR(st.st_mode) and st.st_uid == 0:
        # Ours (as root) from a start that stopped before handing it over: only root can make
        # a root-owned directory, so this is safe to give to the server's user.
        os.chown(path, owner.pw_uid, owner.pw_gid)
        st = os.lstat(path)
    problem = _problem(st, owner)
    if problem is not None:
        raise ConfigError(
            f"The embedded PostgreSQL's socket directory {path} {problem}, so another local "
            "account could reach or replace the database. rollbot will not use it: remove it "
            f"(rm -r {path}) and start again; rollbot creates it private to "
            f"'{owner.pw_name}' (mode 0700)."
        )


def check_private_dir(path: Path, owner: pwd.struct_passwd) -> None:
    """Refuse a socket directory (say, a running server's) that is not ``owner``'s and private."""
    try:
        problem = _problem(os.lstat(path), owner)
    except OSError as err:
        problem = f"cannot be inspected ({err.strerror})"
    if problem is not None:
        raise ConfigError(
            f"The embedded PostgreSQL's socket directory {path} {problem}; rollbot will not "
            "connect through it. Stop that server and start rollbot again."
        )


def _problem(st: os.stat_result, owner: pwd.struct_passwd) -> str | None:
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if st.st_uid != owner.pw_uid:
        return f"belongs to uid {st.st_uid}, not to '{owner.pw_name}' (uid {owner.pw_uid})"
    if stat.S_IMODE(st.st_mode) != 0o700:
        return f"has mode {stat.S_IMODE(st.st_mode):04o}, not 0700"
    return None


def _own_runtime_dir() -> Path | None:
    """$XDG_RUNTIME_DIR when it is ours and private, as the XDG spec requires; else None."""
    value = os.environ.get("XDG_RUNTIME_DIR")
    # As root the server runs as 'postgres', which cannot enter root's runtime directory.
    if not value or not os.path.isabs(value) or os.geteuid() == 0:
        return None
    try:
        st = os.lstat(value)
    except OSError:
        return None
    if (not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid()
            or stat.S_IMODE(st.st_mode) & 0o077):
        return None
    return Path(value)


def _fits(directory: Path) -> bool:
    return (
        not _UNSAFE.search(str(directory))
        and len(os.fsencode(directory / SOCKET_NAME)) <= MAX_SOCKET_PATH
    )
