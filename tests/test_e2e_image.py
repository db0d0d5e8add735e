"""The container image built from the Dockerfile: usage, /healthz, Docker health, non-root."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bot.store.pg_binaries import chown_tree, find_bin_dir, runuser_prefix, system_user
from tests.container_image import ROOT, build_image, docker, ensure_base_image
from tests.fleet import free_port
from tests.sandbox import Sandbox

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def rollbot_image(sandbox_host: Sandbox) -> Iterator[str]:
    """The repository's Dockerfile built as a user would, FROM the local Debian base.

    The sandbox starts the Docker engine (and its lock keeps two checkouts from building at
    once). The first build of the base takes about 45 s here, the image about two and a half
    minutes (2 cores); the base is kept, the image removed afterwards.
    """
    tag = f"rollbot-e2e:{secrets.token_hex(4)}"
    build_image(tag, base=ensure_base_image())
    try:
        yield tag
    finally:
        docker("image", "rm", "-f", tag, check=False)


@pytest.fixture(scope="module")
def tcp_postgres() -> Iterator[str]:
    """A throwaway PostgreSQL on 127.0.0.1 with a password: what a container reaches.

    rollbot's own embedded cluster (the ``pg_cluster`` fixture) takes only peer connections on a
    private Unix socket, which the image's user cannot use; a deployment gives DATABASE_URL.
    """
    base = Path(tempfile.mkdtemp(prefix="rollbot-image-pg-"))
    os.chmod(base, 0o755)
    password = secrets.token_hex(12)
    (base / "pw").write_text(password + "\n", encoding="utf-8")
    bin_dir = find_bin_dir(None, base)
    prefix = runuser_prefix() if os.geteuid() == 0 else []  # PostgreSQL refuses root
    if prefix:
        chown_tree(base, system_user())
    port = free_port()
    data = base / "data"

    def tool(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=120, cwd=base)
    tool(str(bin_dir / "initdb"), "-D", str(data), "-U", "rollbot", "--auth=scram-sha-256",
         f"--pwfile={base / 'pw'}")
    tool(str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l", str(base / "log"), "-o",
         f"-c listen_addresses=127.0.0.1 -p {port} -k {base}", "start")
    try:
        yield f"postgresql://rollbot:{password}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w",
                        "stop"], capture_output=True, timeout=60, cwd=base)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def database(tcp_postgres: str) -> str:
    """An empty database on that server, reached over TCP on localhost with a password."""
    name = f"image_{secrets.token_hex(6)}"
    subprocess.run(["psql", "-X", "-v", "ON_ERROR_STOP=1", tcp_postgres, "-c",
                    f'CREATE DATABASE "{name}"'], check=True, capture_output=True, timeout=60)
    return tcp_postgres.rsplit("/", 1)[0] + "/" + name


@pytest.fixture
def runbook_without_slack(tmp_path: Path) -> Path:
    """The example runbook as a team starts: no [slack] table yet, so serve answers the hooks."""
    example = (ROOT / "rollbot.example.toml").read_text(encoding="utf-8")
    path = tmp_path / "rollbot.toml"
    path.write_text(example.split("\n[slack]")[0] + "\n", encoding="utf-8")
    path.chmod(0o644)  # the image's user (uid 10001) reads it through the bind mount
    return path


def wait_for(what: str, check: object, *, timeout: float, container: str) -> None:
    """Poll ``check()`` until it is true; on time-out, fail with the container's log."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    logs = docker("logs", "--tail", "40", container, check=False)
    pytest.fail(f"{what} within {timeout:.0f} s; the container's log:\n{logs.stdout}{logs.stderr}")


def test_the_image_prints_rollbots_usage(rollbot_image: str) -> None:
    out = docker("run", "--rm", rollbot_image, "--help", timeout=120)
    assert out.stdout.startswith("usage: rollbot")
    assert "serve" in out.stdout and "rollback" in out.stdout


def test_without_a_database_the_image_says_to_set_database_url(
        rollbot_image: str, runbook_without_slack: Path) -> None:
    # The image has no PostgreSQL of its own to fall back on.
    out = docker("run", "--rm", "-v", f"{runbook_without_slack}:/etc/rollbot/rollbot.toml:ro",
                 rollbot_image, "history", timeout=120, check=False)
    assert out.returncode != 0
    assert "set DATABASE_URL" in out.stdout + out.stderr, out.stdout + out.stderr


def test_the_image_serves_healthz_as_a_non_root_user(
        rollbot_image: str, database: str, runbook_without_slack: Path) -> None:
    port = free_port()
    container = f"rollbot-e2e-{secrets.token_hex(4)}"
    # Locked down as deploy/compose.yml and the Kubernetes Deployment run it: read-only root
    # filesystem with a scratch /tmp, no capabilities, no privilege escalation.
    docker("run", "-d", "--name", container, "--network", "host", "--read-only",
           "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true",
           "-e", f"DATABASE_URL={database}", "-e", f"PORT={port}",
           "-v", f"{runbook_without_slack}:/etc/rollbot/rollbot.toml:ro", rollbot_image)
    try:
        def healthz_answers() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for("GET /healthz did not answer 200", healthz_answers, timeout=60,
                 container=container)

        def docker_says_healthy() -> bool:
            status = docker("inspect", "-f", "{{.State.Health.Status}}", container).stdout
            return status.strip() == "healthy"

        # The image's own HEALTHCHECK (python, no curl) runs every 10 s.
        wait_for("Docker did not report the container healthy", docker_says_healthy,
                 timeout=60, container=container)

        uid = docker("exec", container, "id", "-u").stdout.strip()
        assert re.fullmatch(r"\d+", uid) and int(uid) != 0, f"rollbot runs as uid {uid}"
        # It runs `rollbot serve` by default: the command line of the container's process 1.
        cmdline = docker("exec", container, "cat", "/proc/1/cmdline").stdout.split("\0")
        assert cmdline[-3:-1] == ["/opt/rollbot/bin/rollbot", "serve"], cmdline
    finally:
        docker("rm", "-f", container, check=False)
