"""A host session: the run's one SSH connection, its Docker facts, every command audited."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from bot.autorollback.sightings import RecordingDocker, Sightings
from bot.config import EnvironmentConfig
from bot.edges.docker import open_docker_facts
from bot.edges.ssh import SshHost
from bot.errors import HostError
from bot.model import CommandResult
from bot.ports import DockerFacts, LineSink
from bot.preflight_deadline import checking
from bot.redaction import redact
from bot.store.runs import Store

log = logging.getLogger(__name__)


class AuditedHost:
    """A ``RemoteHost`` that writes every command to the audit log before sending it.

    The audit row holds the command as people may see it (secrets redacted); the host gets it
    as written.
    """

    def __init__(self, inner: SshHost, *, store: Store, environment: str, actor: str,
                 run_id: int | None) -> None:
        self._inner = inner
        self._store = store
        self._environment = environment
        self._actor = actor
        self.run_id = run_id
        self._unlinked: list[int] = []  # written while run_id was None

    @property
    def name(self) -> str:
        return self._inner.name

    async def _record(self, kind: str, command: str) -> int | None:
        command = redact(command)
        try:
            entry = await self._store.audit(
                environment=self._environment, actor=self._actor, kind=kind,
                run_id=self.run_id, host=self.name, command=command)
        except Exception as exc:  # a failed audit write must not stop a rollback half-way
            log.error("AUDIT WRITE FAILED for %s on %s: %s: %s", kind, self.name, command, exc)
            return None
        if self.run_id is None:
            self._unlinked.append(entry)
        return entry

    async def adopt(self, run_id: int) -> None:
        """From now on commands belong to ``run_id``; so do those sent before it existed."""
        self.run_id = run_id
        entries, self._unlinked = self._unlinked, []
        if entries:
            try:
                await self._store.link_audit(entries, run_id=run_id)
            except Exception as exc:
                log.error("AUDIT LINK FAILED for run #%s (entries %s): %s", run_id, entries, exc)

    async def _result(self, entry: int | None, status: int | None, started: float,
                      detail: str = "") -> None:
        if entry is None:
            return
        try:
            await self._store.audit_result(entry, exit_status=status,
                                           duration_s=time.monotonic() - started, detail=detail)
        except Exception as exc:
            log.error("AUDIT RESULT WRITE FAILED for entry %s: %s", entry, exc)

    async def run(self, command: str, *, timeout: float, on_line: LineSink | None = None,
                  check: bool = True) -> CommandResult:
        entry = await self._record("command", command)
        started = time.monotonic()
        try:
            result = await self._inner.run(command, timeout=timeout, on_line=on_line, check=check)
        except HostError as exc:
            await self._result(entry, getattr(exc, "exit_status", None), started,
                               redact(str(exc)))
            raise
        await self._result(entry, result.exit_status, started)
        return result

    async def read_file(self, path: str) -> str:
        return await self._inner.read_file(path)

    async def write_file_atomic(self, path: str, text: str, *, backup_path: str) -> None:
        entry = await self._record("file", f"sftp write {path} (previous kept as {backup_path})")
        started = time.monotonic()
        try:
            await self._inner.write_file_atomic(path, text, backup_path=backup_path)
        except HostError as exc:
            await self._result(entry, 1, started, str(exc))
            raise
        await self._result(entry, 0, started)


@dataclass
class HostSession:
    host: AuditedHost
    docker: DockerFacts


@asynccontextmanager
async def open_session(env_name: str, env: EnvironmentConfig, *, store: Store, actor: str,
                       run_id: int | None) -> AsyncIterator[HostSession]:
    """Connect once (host key verified), set up Docker facts; everything closed on exit."""
    async with AsyncExitStack() as stack:
        ssh = SshHost(env.ssh)
        checking("Host reachable", ssh.name)  # connecting, and the Docker socket behind it
        await stack.enter_async_context(ssh)
        host = AuditedHost(ssh, store=store, environment=env_name, actor=actor, run_id=run_id)
        docker = await open_docker_facts(ssh, commands=host, stack=stack)
        # Every look at the containers also remembers what runs (the deploy hook's reference).
        seen = RecordingDocker(docker, sightings=Sightings(store.pool), environment=env_name,
                               env=env, actor=actor)
        yield HostSession(host=host, docker=seen)

