"""A rollback on hosts shaped differently from the sandbox: version formats, project names.

The sandbox host really runs the rollback (sshd, Docker, docker-compose); the variants are made in
the test: a small local version endpoint, and a copy of the compose app named by its .env.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from bot.config import Runbook
from bot.edges.http import HttpxProbe
from bot.model import ProcedureName, RollbackRequest, RunStatus, StepStatus
from bot.service import Rollbot
from bot.store.runs import Store
from bot.versions import parse_version
from tests.fleet import as_prod_user, free_port
from tests.sandbox import Sandbox

pytestmark = pytest.mark.e2e


def simple_rollback() -> RollbackRequest:
    return RollbackRequest(environment="production", procedure=ProcedureName.SIMPLE,
                           target=parse_version("v1.2.2"), requested_by="alice",
                           reason="v1.2.3 health check fails")


class VersionEndpoint:
    """A /version endpoint answering whatever ``body`` holds."""

    def __init__(self) -> None:
        self.body = ""
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                data = endpoint.body.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/version"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def version_endpoint() -> Iterator[VersionEndpoint]:
    endpoint = VersionEndpoint()
    try:
        yield endpoint
    finally:
        endpoint.close()


def with_env(runbook: Runbook, **changes: object) -> Runbook:
    env = runbook.environments["production"]
    compose = changes.pop("compose", None)
    update: dict[str, object] = dict(changes)
    if compose is not None:
        update["compose"] = env.compose.model_copy(update=compose)  # type: ignore[arg-type]
    return runbook.model_copy(update={"environments": {
        **runbook.environments, "production": env.model_copy(update=update)}})


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.mark.parametrize("body", [
    "1.2.2", "v1.2.2\n", '{"version": "v1.2.2", "commit": "abc1234"}', "v1.2.2+build.7",
    "v1.2.2 (abc1234)",
])
async def test_a_rollback_succeeds_whatever_format_the_version_endpoint_uses(
        production: Sandbox, runbook: Runbook, store: Store, http: httpx.AsyncClient,
        version_endpoint: VersionEndpoint, body: str) -> None:
    version_endpoint.body = body
    bot = Rollbot(runbook=with_env(runbook, version_url=version_endpoint.url), store=store,
                  probe=HttpxProbe(http))
    outcome = await bot.rollback(simple_rollback())
    assert outcome.status is RunStatus.SUCCEEDED, outcome.message
    assert production.running_image() == "azora-api:v1.2.2"


async def test_a_json_endpoint_with_another_key_is_read_by_version_json_key(
        production: Sandbox, runbook: Runbook, store: Store, http: httpx.AsyncClient,
        version_endpoint: VersionEndpoint) -> None:
    version_endpoint.body = '{"build": "v1.2.2+build.7", "version": "api-2"}'
    bot = Rollbot(runbook=with_env(runbook, version_url=version_endpoint.url,
                                   version_json_key="build"),
                  store=store, probe=HttpxProbe(http))
    outcome = await bot.rollback(simple_rollback())
    assert outcome.status is RunStatus.SUCCEEDED, outcome.message


async def test_an_endpoint_reporting_another_release_fails_the_run_naming_both(
        production: Sandbox, runbook: Runbook, store: Store, http: httpx.AsyncClient,
        version_endpoint: VersionEndpoint) -> None:
    version_endpoint.body = "1.2.1"
    bot = Rollbot(runbook=with_env(runbook, version_url=version_endpoint.url), store=store,
                  probe=HttpxProbe(http))
    outcome = await bot.rollback(simple_rollback())
    assert outcome.status is RunStatus.FAILED
    failed = [s for s in outcome.steps if s.key == "verify_version"]
    assert failed and failed[0].status is StepStatus.FAILED, [s.key for s in outcome.steps]
    assert "1.2.1" in failed[0].error and "v1.2.2" in failed[0].error, failed[0].error
    assert "1.2.1" in outcome.message and "v1.2.2" in outcome.message, outcome.message


# --- a compose app whose project is named by COMPOSE_PROJECT_NAME in its .env ---------------

def images_of_project(project: str) -> list[str]:
    out = subprocess.run(["docker", "ps", "--filter", f"label=com.docker.compose.project={project}",
                          "--format", "{{.Names}} {{.Image}}"],
                         capture_output=True, text=True, timeout=30, check=True)
    return sorted(out.stdout.split("\n")) if out.stdout.strip() else []


class ShopCopy:
    """The sandbox's compose app copied to another directory, named "shop" by .env or by -p."""

    def __init__(self, production: Sandbox, named_by: str) -> None:
        self.compose = ["docker-compose", "-p", "shop"] if named_by == "-p" else ["docker-compose"]
        self.root = Path(tempfile.mkdtemp(prefix="rollbot-shop-"))
        self.dir = self.root / "app"       # the directory's name is not the project's
        self.dir.mkdir()
        self.port = free_port()
        text = production.compose_file.read_text()
        original_port = str(production.api_port)
        assert f"AZORA_PORT={original_port}" in text
        self.file = self.dir / "docker-compose.yml"
        self.file.write_text(text.replace(f"AZORA_PORT={original_port}",
                                          f"AZORA_PORT={self.port}"))
        if named_by == ".env":
            (self.dir / ".env").write_text("COMPOSE_PROJECT_NAME=shop\n")
        for path in (self.root, *self.root.rglob("*")):
            shutil.chown(path, "prod-user", "prod-user")
        self.root.chmod(0o755)

    def up(self) -> None:
        out = as_prod_user(*self.compose, "up", "-d", cwd=self.dir)
        assert out.returncode == 0, out.stderr

    def down(self) -> None:
        as_prod_user(*self.compose, "down", "--remove-orphans", cwd=self.dir)
        shutil.rmtree(self.root, ignore_errors=True)

    def ps(self) -> str:
        return as_prod_user(*self.compose, "ps", cwd=self.dir).stdout


@pytest.fixture(params=[".env", "-p"])
def shop(production: Sandbox, request: pytest.FixtureRequest) -> Iterator[ShopCopy]:
    copy = ShopCopy(production, request.param)
    try:
        copy.up()
        yield copy
    finally:
        copy.down()


async def test_a_project_named_by_env_or_p_is_rolled_back_and_step_7_sees_it(
        production: Sandbox, shop: ShopCopy, runbook: Runbook, store: Store,
        http: httpx.AsyncClient) -> None:
    assert any("shop_api_1" in ln for ln in images_of_project("shop")), images_of_project("shop")
    assert images_of_project("app") == []                     # not the directory's name
    original_before = images_of_project("azora")
    base = f"http://127.0.0.1:{shop.port}"
    bot = Rollbot(runbook=with_env(runbook, health_url=f"{base}/health",
                                   version_url=f"{base}/version", smoke_urls=(),
                                   database=None,
                                   compose={"file": str(shop.file),
                                            "command": " ".join(shop.compose)}),
                  store=store, probe=HttpxProbe(http))
    outcome = await bot.rollback(simple_rollback())
    assert outcome.status is RunStatus.SUCCEEDED, outcome.message
    confirm = next(s for s in outcome.steps if s.key == "confirm_services")
    assert confirm.status is StepStatus.SUCCEEDED, confirm
    assert "shop_api_1 azora-api:v1.2.2" in images_of_project("shop")
    assert "shop_api_1" in shop.ps()                           # what compose itself sees
    assert (await http.get(f"{base}/version")).text.strip() == "v1.2.2"
    assert images_of_project("azora") == original_before      # the original is untouched
    assert "image: azora-api:v1.2.3" in production.compose_file.read_text()


async def test_a_project_renamed_in_env_after_its_containers_started_is_refused_naming_both(
        production: Sandbox, runbook: Runbook, store: Store, http: httpx.AsyncClient) -> None:
    # Someone edits .env on the host; the containers still run under the old name, and compose
    # would now stop and start a project with nothing in it.
    shop = ShopCopy(production, ".env")
    env_file = shop.dir / ".env"
    try:
        shop.up()
        running_before = images_of_project("shop")
        assert any("shop_api_1 azora-api:v1.2.3" in ln for ln in running_before)
        env_file.write_text("COMPOSE_PROJECT_NAME=shopnext\n")
        compose_before = shop.file.read_text()
        base = f"http://127.0.0.1:{shop.port}"
        bot = Rollbot(runbook=with_env(runbook, health_url=f"{base}/health",
                                       version_url=f"{base}/version", smoke_urls=(),
                                       database=None, compose={"file": str(shop.file)}),
                      store=store, probe=HttpxProbe(http))
        outcome = await bot.rollback(simple_rollback())

        assert outcome.status is RunStatus.REFUSED, outcome.message
        assert "nothing was changed" in outcome.message and outcome.steps == ()
        assert "Compose project" in outcome.message
        assert f"would act on project 'shopnext' (from COMPOSE_PROJECT_NAME in {env_file})" \
            in outcome.message, outcome.message
        assert "belong to project 'shop'" in outcome.message
        audit = await store.audit_entries(run_id=outcome.run_id)
        assert any(a.kind == "refusal" for a in audit)
        commands = [a.command for a in audit if a.kind == "command"]
        assert not [c for c in commands if " ps " in c or " stop" in c or " down" in c], commands
        assert images_of_project("shop") == running_before    # still running, still v1.2.3
        assert images_of_project("shopnext") == []
        assert shop.file.read_text() == compose_before
        assert env_file.read_text() == "COMPOSE_PROJECT_NAME=shopnext\n"
    finally:
        env_file.write_text("COMPOSE_PROJECT_NAME=shop\n")   # so that down() finds them
        shop.down()
