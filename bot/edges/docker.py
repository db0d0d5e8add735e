"""Docker facts about the host: image tags and compose containers.

Preferred path: the Docker API through aiodocker, over the host's Docker socket forwarded through
the run's SSH connection. Hardened hosts forbid socket forwarding (``AllowStreamLocalForwarding
no``); there the same facts come from the docker CLI's JSON output over SSH.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any

import aiodocker
import aiohttp
import asyncssh

from bot.config import ComposeConfig
from bot.edges.ssh import SshHost
from bot.errors import HostError
from bot.model import ContainerState, ImageTag
from bot.ports import DockerFacts, RemoteHost
from bot.shell import join
from bot.versions import try_parse_version

log = logging.getLogger(__name__)

DOCKER_SOCKET = "/var/run/docker.sock"
COMPOSE_PROJECT_LABEL = "com.docker.compose.project"
COMPOSE_SERVICE_LABEL = "com.docker.compose.service"
# Where compose was run from: how a project named by .env or the file's `name:` is recognised.
COMPOSE_FILES_LABEL = "com.docker.compose.project.config_files"
COMPOSE_DIR_LABEL = "com.docker.compose.project.working_dir"
_API_TIMEOUT_S = 20.0
_CLI_TIMEOUT_S = 30.0


def _label_filter(compose: ComposeConfig) -> str:
    named = compose.named_project
    return f"{COMPOSE_PROJECT_LABEL}={named}" if named else COMPOSE_PROJECT_LABEL


def _belongs(labels: Mapping[str, str], compose: ComposeConfig) -> bool:
    """Whether compose, run on ``compose.file`` in its directory, counts this container as its own.

    A project rollbot is told (``project``, ``-p``) is matched by name. Otherwise compose takes the
    name from ``COMPOSE_PROJECT_NAME`` in the directory's .env, the file's ``name:`` or the
    directory, and records where it ran in the container's labels: those are matched instead.
    """
    named = compose.named_project
    project = labels.get(COMPOSE_PROJECT_LABEL)
    if named:
        return project == named
    files, workdir = labels.get(COMPOSE_FILES_LABEL), labels.get(COMPOSE_DIR_LABEL)
    if files is None and workdir is None:   # a compose too old to record where it ran
        return project == compose.project_name
    return (compose.file in (files or "").split(",")
            or (workdir or "").rstrip("/") == compose.directory.rstrip("/"))


def _of_project(found: list[tuple[Mapping[str, str], ContainerState]], compose: ComposeConfig
                ) -> list[ContainerState]:
    mine = [(labels, c) for labels, c in found if _belongs(labels, compose)]
    projects = {labels.get(COMPOSE_PROJECT_LABEL) for labels, _ in mine}
    if len(projects) > 1:
        # Left-overs of a project the directory was once run under (before .env named another):
        # `docker-compose ps` lists only the current one, which is the one that runs.
        running = {labels.get(COMPOSE_PROJECT_LABEL) for labels, c in mine if c.up}
        if running:
            mine = [(lb, c) for lb, c in mine if lb.get(COMPOSE_PROJECT_LABEL) in running]
    return sorted((c for _, c in mine), key=lambda s: s.name)


def _image_tags_from(repository: str, items: list[tuple[str, datetime, str]]) -> list[ImageTag]:
    """Newest first, as ``docker images`` lists them."""
    tags = [
        ImageTag(repository=repository, tag=tag, version=try_parse_version(tag), created=created,
                 image_id=image_id)
        for tag, created, image_id in items
    ]
    return sorted(tags, key=lambda t: t.created, reverse=True)


class ApiDockerFacts:
    """Facts from the Docker Engine API (aiodocker) over a forwarded socket."""

    via = "Docker API over the SSH-forwarded socket"

    def __init__(self, docker: aiodocker.Docker) -> None:
        self._docker = docker

    async def image_tags(self, repository: str) -> list[ImageTag]:
        try:
            images = await self._docker.images.list(filters={"reference": [repository]})
        except (aiodocker.DockerError, aiohttp.ClientError, OSError) as exc:
            raise HostError(f"Docker API: listing images of {repository} failed: {exc}") from None
        items: list[tuple[str, datetime, str]] = []
        for image in images:
            created = datetime.fromtimestamp(int(image.get("Created", 0)), tz=UTC)
            for ref in image.get("RepoTags") or []:
                repo, _, tag = ref.rpartition(":")
                if repo == repository:
                    items.append((tag, created, str(image.get("Id", ""))))
        return _image_tags_from(repository, items)

    async def compose_containers(self, compose: ComposeConfig) -> list[ContainerState]:
        try:
            containers = await self._docker.containers.list(
                all=True, filters=json.dumps({"label": [_label_filter(compose)]})
            )
        except (aiodocker.DockerError, aiohttp.ClientError, OSError) as exc:
            raise HostError(f"Docker API: listing containers failed: {exc}") from None
        found: list[tuple[Mapping[str, str], ContainerState]] = []
        for c in containers:
            raw: dict[str, Any] = c._container
            labels = raw.get("Labels") or {}
            found.append((labels,
                ContainerState(
                    name=(raw.get("Names") or ["?"])[0].lstrip("/"),
                    service=labels.get(COMPOSE_SERVICE_LABEL, "?"),
                    image=str(raw.get("Image", "")),
                    state=str(raw.get("State", "")),
                    status=str(raw.get("Status", "")),
                    project=str(labels.get(COMPOSE_PROJECT_LABEL, "")),
                )
            ))
        return _of_project(found, compose)


class CliDockerFacts:
    """Facts from ``docker … --format '{{json .}}'`` run over SSH."""

    via = "docker CLI over SSH (socket forwarding not allowed on this host)"

    def __init__(self, host: RemoteHost) -> None:
        self._host = host

    async def image_tags(self, repository: str) -> list[ImageTag]:
        command = join("docker", "image", "ls", "--no-trunc", "--format", "{{json .}}", repository)
        result = await self._host.run(command, timeout=_CLI_TIMEOUT_S)
        items = []
        for row in _json_lines(result.output):
            if row.get("Repository") == repository and row.get("Tag") not in (None, "<none>"):
                items.append((str(row["Tag"]), _cli_time(str(row.get("CreatedAt", ""))),
                              str(row.get("ID", ""))))
        return _image_tags_from(repository, items)

    async def compose_containers(self, compose: ComposeConfig) -> list[ContainerState]:
        command = join("docker", "ps", "-a", "--no-trunc", "--filter",
                       f"label={_label_filter(compose)}", "--format", "{{json .}}")
        result = await self._host.run(command, timeout=_CLI_TIMEOUT_S)
        found: list[tuple[Mapping[str, str], ContainerState]] = []
        for row in _json_lines(result.output):
            labels = dict(
                part.split("=", 1) for part in str(row.get("Labels", "")).split(",") if "=" in part
            )
            found.append((labels,
                ContainerState(
                    name=str(row.get("Names", "?")),
                    service=labels.get(COMPOSE_SERVICE_LABEL, "?"),
                    image=str(row.get("Image", "")),
                    state=str(row.get("State", "")),
                    status=str(row.get("Status", "")),
                    project=labels.get(COMPOSE_PROJECT_LABEL, ""),
                )
            ))
        return _of_project(found, compose)


def _json_lines(output: str) -> list[dict[str, Any]]:
    rows = []
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def _cli_time(text: str) -> datetime:
    # docker prints e.g. "2026-11-27 10:01:02 +0000 UTC"
    try:
        return datetime.strptime(" ".join(text.split()[:3]), "%Y-%m-%d %H:%M:%S %z")
    except ValueError:
        return datetime.fromtimestamp(0, tz=UTC)


async def open_docker_facts(
    host: SshHost, *, commands: RemoteHost, stack: AsyncExitStack
) -> DockerFacts:
    """Forward the Docker socket through ``host``'s connection; fall back to the CLI if refused.

    ``commands`` is the (audited) host the CLI fallback sends its commands through.
    """
    tmpdir = tempfile.mkdtemp(prefix="rollbot-docker-")
    stack.callback(_remove_dir, tmpdir)
    local = os.path.join(tmpdir, "docker.sock")
    try:
        listener = await host.connection.forward_local_path(local, DOCKER_SOCKET)
    except (OSError, asyncssh.Error) as exc:
        return _fallback(host.name, str(exc), commands)
    stack.callback(listener.close)
    docker = aiodocker.Docker(
        url=f"unix://{local}", timeout=aiohttp.ClientTimeout(total=_API_TIMEOUT_S)
    )
    try:
        # The forward is only refused when a channel opens, so probe once before trusting it.
        await docker._query_json("version")
    except (aiodocker.DockerError, aiohttp.ClientError, OSError, TimeoutError) as exc:
        await docker.close()
        return _fallback(host.name, str(exc) or type(exc).__name__, commands)
    stack.push_async_callback(docker.close)
    return ApiDockerFacts(docker)


_warned_hosts: set[str] = set()


def _fallback(host: str, reason: str, commands: RemoteHost) -> CliDockerFacts:
    # Said once per host per process: on a hardened host it is the normal path, not news.
    level = logging.DEBUG if host in _warned_hosts else logging.WARNING
    _warned_hosts.add(host)
    log.log(level, "Docker socket forwarding refused by %s (%s); using the docker CLI over SSH",
            host, reason)
    return CliDockerFacts(commands)


def _remove_dir(path: str) -> None:
    for name in os.listdir(path):
        os.unlink(os.path.join(path, name))
    os.rmdir(path)
