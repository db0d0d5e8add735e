"""The edges the engine talks through. One real implementation each, injected at the root."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from bot.model import CommandResult, ContainerState, HealthPoll, ImageTag

if TYPE_CHECKING:
    from bot.config import ComposeConfig

LineSink = Callable[[str], None]


class RemoteHost(Protocol):
    """A production host reached over one SSH connection."""

    @property
    def name(self) -> str: ...

    async def run(
        self, command: str, *, timeout: float, on_line: LineSink | None = None, check: bool = True
    ) -> CommandResult:
        """Run one command; stream its lines; raise CommandFailed on non-zero when ``check``."""
        ...

    async def read_file(self, path: str) -> str: ...

    async def write_file_atomic(self, path: str, text: str, *, backup_path: str) -> None:
        """Save the current file as ``backup_path``, then replace ``path`` by rename."""
        ...


class DockerFacts(Protocol):
    """Read-only facts from the host's Docker engine."""

    @property
    def via(self) -> str: ...

    async def image_tags(self, repository: str) -> list[ImageTag]: ...

    async def compose_containers(self, compose: ComposeConfig) -> list[ContainerState]:
        """The containers ``docker-compose ps`` in the compose file's directory would list."""
        ...


class HttpProbe(Protocol):
    """Health, version and smoke URLs of the service."""

    async def wait_healthy(self, url: str, *, deadline_s: float, interval_s: float) -> HealthPoll:
        ...

    async def fetch(self, url: str, *, timeout_s: float) -> tuple[int | None, str]: ...
