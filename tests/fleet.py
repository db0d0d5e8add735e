"""Fleet hosts for the end-to-end tests: copies of the sandbox's compose app, one per "host".

Each copy lives in its own directory with its own port and compose project, and is reached
through the sandbox's sshd like the original: to rollbot it is one more production host with
its own SSH connection, compose file and URLs.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from bot.config import Runbook
from tests.sandbox import Sandbox


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def as_prod_user(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", "prod-user", "--", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


class FleetHost:
    """The sandbox's compose app copied into its own directory, port and project ("web-1")."""

    def __init__(self, production: Sandbox, name: str, *, root: Path) -> None:
        self.name = name
        self.project = name.replace("-", "")          # compose project names: [a-z0-9_-]
        self.dir = root / name
        self.dir.mkdir(parents=True)
        self.port = free_port()
        text = production.compose_file.read_text()
        original_port = str(production.api_port)
        assert f"AZORA_PORT={original_port}" in text
        self.file = self.dir / "docker-compose.yml"
        self.file.write_text(text.replace(f"AZORA_PORT={original_port}",
                                          f"AZORA_PORT={self.port}"))
        for path in (self.dir, *self.dir.rglob("*")):
            shutil.chown(path, "prod-user", "prod-user")
        self.compose = ["docker-compose", "-p", self.project]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        out = as_prod_user(*self.compose, "up", "-d", cwd=self.dir)
        assert out.returncode == 0, out.stderr

    def down(self) -> None:
        as_prod_user(*self.compose, "down", "--remove-orphans", "-t", "2", cwd=self.dir)

    def version(self) -> str:
        try:
            return httpx.get(f"{self.base_url}/version", timeout=2).text.strip()
        except httpx.HTTPError as exc:
            return f"(no answer: {type(exc).__name__})"

    def running_image(self, service: str = "api") -> str:
        out = subprocess.run(
            ["docker", "ps", "--filter", f"label=com.docker.compose.project={self.project}",
             "--filter", f"label=com.docker.compose.service={service}",
             "--format", "{{.Image}}"], capture_output=True, text=True, timeout=30, check=True)
        return out.stdout.strip()

    def host_entry(self) -> dict[str, object]:
        """This host's `[[environments.X.hosts]]` table."""
        return {"name": self.name,
                "compose": {"file": str(self.file), "command": " ".join(self.compose)},
                "health_url": f"{self.base_url}/health",
                "version_url": f"{self.base_url}/version",
                "smoke_urls": [f"{self.base_url}/api/users"]}


class Fleet:
    """N fleet hosts, created and started together, removed together."""

    def __init__(self, production: Sandbox, names: Sequence[str]) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="rollbot-fleet-"))
        self.root.chmod(0o755)
        self.hosts = [FleetHost(production, n, root=self.root) for n in names]

    def __getitem__(self, name: str) -> FleetHost:
        return next(h for h in self.hosts if h.name == name)

    def up(self) -> None:
        for h in self.hosts:
            h.up()

    def down(self) -> None:
        for h in self.hosts:
            h.down()
        shutil.rmtree(self.root, ignore_errors=True)

    def versions(self) -> dict[str, str]:
        return {h.name: h.version() for h in self.hosts}


def fleet_runbook(runbook: Runbook, fleet: Fleet, *, environment: str = "production",
                  hosts: Mapping[str, Mapping[str, object]] | None = None,
                  settings: Mapping[str, object] | None = None,
                  **fleet_keys: object) -> Runbook:
    """The sandbox runbook with ``environment`` made a fleet of ``fleet``'s hosts.

    ``fleet_keys`` are the `[environments.X.fleet]` table (canary, batch_size, max_failed_hosts).
    ``hosts`` changes a host's `[[hosts]]` entry by name (e.g. its health_url); ``settings``
    sets environment-level keys (e.g. timeouts, database).
    """
    env = runbook.environments[environment].model_dump(exclude={"host_envs"})
    env.update(settings or {})
    env["hosts"] = [{**h.host_entry(), **(hosts or {}).get(h.name, {})} for h in fleet.hosts]
    env["fleet"] = dict(fleet_keys)
    data = runbook.model_dump()
    data["environments"] = {**{k: v.model_dump(exclude={"host_envs"})
                               for k, v in runbook.environments.items()}, environment: env}
    return Runbook.model_validate(data)
