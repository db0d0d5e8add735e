"""The SSH edge: one asyncssh connection per host per run, host key always verified.

Every command has a timeout, a capped capture of its output (the tail is what matters when it
fails), line-by-line streaming to an observer, and a checked exit status. Files are changed over
SFTP with a backup and an atomic rename, so a dropped connection leaves the old or the new file,
never half of one.
"""

from __future__ import annotations

import asyncio
import logging
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

    def __init__(self, config: SshConfig) -> None:
        self._config = config
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
        if self._sftp is not None:
            self._sftp.exit()
            self._sftp = None
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

        def emit(line: str) -> None:
            capture.add(line)
            if on_line is not None:
                on_line(line)

        try:
            # stderr and stdout travel as two SSH streams whose relative order is lost: merge them
            # on the host, so lines arrive in the order the command wrote them.
            process = await conn.create_process(
                f"exec 2>&1\n{command}", stderr=asyncssh.STDOUT, encoding="utf-8",
                errors="replace",
            )
        except (OSError, asyncssh.Error) as exc:
            raise ConnectionLost(
                f"lost the SSH connection to {self.name} before the command started: "
                f"{_reason(exc)}"
            ) from None
        try:
            async with asyncio.timeout(timeout):
                while line := await process.stdout.readline():  # "" is end of output
                    emit(line.rstrip("\r\n"))
                completed = await process.wait(check=False)
        except asyncio.CancelledError:
            process.close()  # the step was cancelled or timed out: don't leave the channel open
            raise
        except TimeoutError:
            process.close()
            raise CommandTimeout(
                f"`{_short(command)}` on {self.name} did not finish within {timeout:g} s and "
                "was stopped."
            ) from None
        except (OSError, asyncssh.Error) as exc:
            raise ConnectionLost(
                f"the SSH connection to {self.name} dropped while running `{_short(command)}`: "
                f"{_reason(exc)}"
            ) from None
        status = completed.exit_status
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
            duration_s=time.monotonic() - started,
        )
        if check and status != 0:
            raise CommandFailed(
                f"`{_short(command)}` on {self.name} exited with status {status}",
                exit_status=status,
                output_tail=tail(result.output),
            )
        return result

    async def _sftp_client(self) -> asyncssh.SFTPClient:
        if self._sftp is None:
            self._sftp = await self.connection.start_sftp_client()
        return self._sftp

    async def read_file(self, path: str) -> str:
        try:
            sftp = await self._sftp_client()
            async with sftp.open(path, "rb") as f:
                data: bytes = await f.read()
        except asyncssh.SFTPNoSuchFile:
            raise HostError(f"{path} does not exist on {self.name}") from None
        except (OSError, asyncssh.Error) as exc:
            raise _sftp_error(self.name, f"reading {path}", exc) from None
        return data.decode("utf-8")

    async def write_file_atomic(self, path: str, text: str, *, backup_path: str) -> None:
        """Save the current file as ``backup_path``, write a temp file, rename it over ``path``."""
        tmp_path = f"{path}.rollbot-tmp"
        try:
            sftp = await self._sftp_client()
            attrs = await sftp.stat(path)
            async with sftp.open(path, "rb") as f:
                current: bytes = await f.read()
            await self._write_new(sftp, backup_path, current, attrs.permissions)
            await self._write_new(sftp, tmp_path, text.encode("utf-8"), attrs.permissions)
            # rename(2) on the host: readers see the old file or the new one, never a partial one.
            await sftp.posix_rename(tmp_path, path)
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
