"""The SSH edge: one asyncssh connection per host per run, host key always verified.

Every command has a timeout, a capped capture of its output (the tail is what matters when it
fails), line-by-line streaming to an observer, and a checked exit status. A command that runs past
its timeout is killed on the host, never left running: it runs under coreutils ``timeout`` (which
also fires when the connection is gone), and when rollbot stops waiting first (a step's timeout,
a cancelled run) it kills the command's process group over a fresh channel. Files are changed over
SFTP with a backup and an atomic rename, so a dropped connection leaves the old or the new file,
never half of one; SFTP reads and writes have a timeout too.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import asyncssh

from bot.config import SshConfig
from bot.errors import (
    CommandFailed,
    CommandTimeout,
    ConnectionLost,
    HostError,
    HostKeyRejected,
)
from bot.model import CommandResult
from bot.ports import LineSink
from bot.redaction import redact

log = logging.getLogger(__name__)

OUTPUT_CAP_BYTES = 64 * 1024
_TAIL_LINES_IN_ERROR = 12
KILL_GRACE_S = 5.0       # SIGTERM first; SIGKILL for what is still there this much later
SFTP_TIMEOUT_S = 30.0    # one compose-file read or write; they are a few kB
CHANNEL_OPEN_TIMEOUT_S = 30.0  # the server's answer to "open a session and run this"
_KILL_TIMEOUT_S = KILL_GRACE_S + 10.0
_TIMEOUT_STATUS = 124    # coreutils timeout's exit status when the command timed out
_PGID_MARKER = "\x1erollbot-pgid "


@dataclass
class _Capture:
    """Keeps the last ``OUTPUT_CAP_BYTES`` of output, line by line."""

    lines: deque[str]
    size: int = 0
    truncated: bool = False

    def add(self, line: str) -> None:
        self.lines.append(line)
        self.size += len(line) + 1
        while self.size > OUTPUT_CAP_BYTES and self.lines:
            self.size -= len(self.lines.popleft()) + 1
            self.truncated = True

    def text(self) -> str:
        return "\n".join(self.lines)


def tail(text: str, lines: int = _TAIL_LINES_IN_ERROR) -> str:
    """The last ``lines`` lines of ``text``."""
    return "\n".join(text.splitlines()[-lines:])


class SshHost:
    """A production host over one SSH connection. Use as an async context manager."""

    def __init__(self, config: SshConfig, *, sftp_timeout_s: float = SFTP_TIMEOUT_S) -> None:
        self._config = config
        self._sftp_timeout_s = sftp_timeout_s
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None

    @property
    def name(self) -> str:
        c = self._config
        return f"{c.user}@{c.host}:{c.port}"

    @property
    def connection(self) -> asyncssh.SSHClientConnection:
        if self._conn is None:
            raise ConnectionLost(f"not connected to {self.name}")
        return self._conn

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the connection; refuse an unknown or changed host key before anything is sent."""
        c = self._config
        known_hosts = Path(c.known_hosts)
        if not await asyncio.to_thread(known_hosts.is_file):
            raise HostKeyRejected(
                f"known_hosts file {known_hosts} does not exist, so the host key of {self.name} "
                "cannot be verified. Nothing was sent."
            )
        try:
            self._conn = await asyncssh.connect(
                c.host,
                port=c.port,
                username=c.user,
                client_keys=[str(c.key_file)],
                known_hosts=str(known_hosts),
                config=None,
                agent_path=None,
                connect_timeout=c.connect_timeout_s,
                keepalive_interval=5,
                keepalive_count_max=3,
            )
        except asyncssh.HostKeyNotVerifiable:
            raise HostKeyRejected(
                f"{c.host}:{c.port} presented an SSH host key that does not match {known_hosts} "
                "(unknown or changed). Nothing was sent. If the host was rebuilt on purpose, "
                "check its fingerprint out of band and update known_hosts."
            ) from None
        except asyncssh.PermissionDenied:
            raise ConnectionLost(
                f"{self.name} refused rollbot's SSH key {c.key_file}. Nothing was sent."
            ) from None
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            raise ConnectionLost(
                f"cannot reach {self.name}: {_reason(exc)}. Nothing was sent."
            ) from None

    async def close(self) -> None:
        self._drop_sftp()
        if self._conn is not None:
            self._conn.close()
            try:
                await asyncio.wait_for(self._conn.wait_closed(), timeout=5)
            except (TimeoutError, OSError, asyncssh.Error):
                pass
            self._conn = None

    async def run(
        self, command: str, *, timeout: float, on_line: LineSink | None = None, check: bool = True
    ) -> CommandResult:
        """Run ``command`` on the host's shell; capture and stream output; check the status."""
        conn = self.connection
        capture = _Capture(lines=deque())
        started = time.monotonic()
        pgid: int | None = None

        def emit(line: str) -> None:
            nonlocal pgid
            if pgid is None and line.startswith(_PGID_MARKER):
                pgid = int(line.removeprefix(_PGID_MARKER))
                return
            capture.add(line)
            if on_line is not None:
                on_line(line)

        try:
            # Opening the session channel waits for the server; a server that never answers
            # must not hold a pre-flight or a step forever (keepalives only catch a dead link).
            async with asyncio.timeout(CHANNEL_OPEN_TIMEOUT_S):
                process = await conn.create_process(
                    remote_command(command, timeout=timeout), stderr=asyncssh.STDOUT,
                    encoding="utf-8", errors="replace",
                )
        except TimeoutError:
            raise ConnectionLost(
                f"{self.name} did not open a session for `{_short(command)}` within "
                f"{CHANNEL_OPEN_TIMEOUT_S:g} s; the command did not start"
            ) from None
        except (OSError, asyncssh.Error) as exc:
            raise ConnectionLost(
                f"lost the SSH connection to {self.name} before the command started: "
                f"{_reason(exc)}"
            ) from None
        try:
            # The host's own `timeout` fires first; this one only when the host stops answering.
            async with asyncio.timeout(timeout + KILL_GRACE_S + 5):
                while line := await process.stdout.readline():  # "" is end of output
                    emit(line.rstrip("\r\n"))
                completed = await process.wait(check=False)
        except asyncio.CancelledError:
            # The step was cancelled or ran past its own timeout: stop the command on the host too.
            process.close()
            await self._kill_remote(pgid, command)
            raise
        except TimeoutError:
            process.close()
            await self._kill_remote(pgid, command)
            raise CommandTimeout(self._timeout_message(command, timeout)) from None
        except (OSError, asyncssh.Error) as exc:
            raise ConnectionLost(
                f"the SSH connection to {self.name} dropped while running `{_short(command)}`: "
                f"{_reason(exc)}"
            ) from None
        status = completed.exit_status
        elapsed = time.monotonic() - started
        # 124: timeout sent SIGTERM; killed by a signal: it had to send SIGKILL after the grace.
        if elapsed >= timeout * 0.99 and (status == _TIMEOUT_STATUS or completed.exit_signal):
            await self._kill_remote(pgid, command)  # whatever ignored SIGTERM and outlived it
            raise CommandTimeout(self._timeout_message(command, timeout))
        if status is None or status < 0:
            raise ConnectionLost(
                f"`{_short(command)}` on {self.name} ended without an exit status "
                "(the connection or the remote shell was killed)"
            )
        result = CommandResult(
            command=command,
            exit_status=status,
            output=capture.text(),
            truncated=capture.truncated,
            duration_s=elapsed,
        )
        if check and status != 0:
            raise CommandFailed(
                f"`{_short(command)}` on {self.name} exited with status {status}",
                exit_status=status,
                output_tail=tail(result.output),
            )
        return result

    def _timeout_message(self, command: str, timeout: float) -> str:
        return (f"`{_short(command)}` on {self.name} did not finish within {timeout:g} s and "
                "was stopped: its processes on the host were killed.")

    async def _kill_remote(self, pgid: int | None, command: str) -> None:
        """Kill the command's process group on the host (SIGTERM, then SIGKILL after a grace)."""
        if pgid is None or self._conn is None:
            # Not started yet, or no connection: the host's `timeout` still ends it.
            log.warning("could not kill `%s` on %s (%s); the host's timeout will", _short(command),
                        self.name, "no connection" if self._conn is None else "pid not known yet")
            return

        async def kill() -> None:
            assert self._conn is not None
            await self._conn.run(kill_group_command(pgid), check=False)

        try:
            # Shielded: a second cancellation must not leave the command half-killed.
            await asyncio.shield(asyncio.wait_for(kill(), timeout=_KILL_TIMEOUT_S))
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            log.warning("killing `%s` (process group %s) on %s failed: %s; the host's timeout "
                        "will end it", _short(command), pgid, self.name, _reason(exc))

    async def _sftp_client(self) -> asyncssh.SFTPClient:
        if self._sftp is None:
            self._sftp = await self.connection.start_sftp_client()
        return self._sftp

    def _drop_sftp(self) -> None:
        """Forget an SFTP session that stopped answering; the next file operation opens another."""
        if self._sftp is not None:
            self._sftp.exit()
            self._sftp = None

    async def read_file(self, path: str) -> str:
        try:
            async with asyncio.timeout(self._sftp_timeout_s):
                sftp = await self._sftp_client()
                async with sftp.open(path, "rb") as f:
                    data: bytes = await f.read()
        except TimeoutError:
            self._drop_sftp()
            raise CommandTimeout(
                f"reading {path} on {self.name} (SFTP) did not finish within "
                f"{self._sftp_timeout_s:g} s and was stopped; nothing was changed."
            ) from None
        except asyncssh.SFTPNoSuchFile:
            raise HostError(f"{path} does not exist on {self.name}") from None
        except (OSError, asyncssh.Error) as exc:
            raise _sftp_error(self.name, f"reading {path}", exc) from None
        return data.decode("utf-8")

    async def write_file_atomic(self, path: str, text: str, *, backup_path: str) -> None:
        """Save the current file as ``backup_path``, write a temp file, rename it over ``path``."""
        tmp_path = f"{path}.rollbot-tmp"
        try:
            async with asyncio.timeout(self._sftp_timeout_s):
                sftp = await self._sftp_client()
                attrs = await sftp.stat(path)
                async with sftp.open(path, "rb") as f:
                    current: bytes = await f.read()
                await self._write_new(sftp, backup_path, current, attrs.permissions)
                await self._write_new(sftp, tmp_path, text.encode("utf-8"), attrs.permissions)
                # rename(2) on the host: readers see the old file or the new one, never a part.
                await sftp.posix_rename(tmp_path, path)
        except TimeoutError:
            self._drop_sftp()
            raise CommandTimeout(
                f"writing {path} on {self.name} (SFTP) did not finish within "
                f"{self._sftp_timeout_s:g} s and was stopped; {path} is either unchanged or "
                "completely replaced (never partial)."
            ) from None
        except (OSError, asyncssh.Error) as exc:
            raise _sftp_error(self.name, f"writing {path}", exc) from None

    @staticmethod
    async def _write_new(
        sftp: asyncssh.SFTPClient, path: str, data: bytes, permissions: int | None
    ) -> None:
        async with sftp.open(path, "wb") as f:
            await f.write(data)
            await f.fsync()
        if permissions is not None:
            await sftp.chmod(path, permissions & 0o7777)


def remote_command(command: str, *, timeout: float) -> str:
    """What is sent for ``command``: under coreutils ``timeout``, its process group announced.

    sshd makes the session's shell a process group leader, and ``exec timeout`` keeps that pid, so
    ``$$`` is the group every process of the command is in: killing the group stops it all.
    """
    return (
        # stderr and stdout travel as two SSH streams whose relative order is lost: merge them
        # on the host, so lines arrive in the order the command wrote them.
        "exec 2>&1\n"
        f"printf '\\036rollbot-pgid %s\\n' \"$$\"\n"
        f"exec timeout -k {KILL_GRACE_S:g} {timeout:.3f} \"${{SHELL:-/bin/sh}}\" -c "
        f"{shlex.quote(command)}\n"
    )


def kill_group_command(pgid: int) -> str:
    """SIGTERM the process group, wait up to the grace for it to go, then SIGKILL what is left."""
    g = f"-{int(pgid)}"
    ticks = int(KILL_GRACE_S * 10)
    return (
        f"kill -s TERM -- {g} 2>/dev/null || exit 0; i=0; "
        f"while kill -s 0 -- {g} 2>/dev/null; do "
        f"if [ $i -ge {ticks} ]; then kill -s KILL -- {g} 2>/dev/null; echo killed; exit 0; fi; "
        f"i=$((i + 1)); sleep 0.1; done; echo stopped"
    )


def _short(command: str, limit: int = 120) -> str:
    # Redact before cutting: a cut URL ("postgresql://u:pw") would no longer look like one.
    command = redact(command)
    return command if len(command) <= limit else command[: limit - 1] + "…"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, TimeoutError) and not text:
        return "timed out"
    return text or type(exc).__name__


def _sftp_error(host: str, doing: str, exc: BaseException) -> HostError:
    if isinstance(exc, asyncssh.ConnectionLost | asyncssh.DisconnectError | ConnectionError):
        return ConnectionLost(f"the SSH connection to {host} dropped while {doing}")
    return HostError(f"{doing} on {host} failed: {_reason(exc)}")
