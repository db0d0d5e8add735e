"""What the switch step edits on a real host: a tag in `${VAR}` set in .env, and a release of two
services (api and worker) switched together.

Each test copies the sandbox's compose app into its own directory, port and compose project
(reached through the sandbox's sshd as prod-user, like the original), shaped the way the test
needs, and rolls it back with rollbot for real.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from bot.config import Runbook
from bot.edges.http import HttpxProbe
from bot.engine import Run
from bot.events import RunEvent, StepStarted
from bot.model import ProcedureName, RollbackRequest, RunStatus, StepStatus
from bot.recovery.offers import RecoveryChoice
from bot.recovery.runs import Recoveries
from bot.service import Rollbot
from bot.store.runs import Store
from bot.versions import parse_version
from tests.fleet import as_prod_user, free_port
from tests.sandbox import Sandbox

pytestmark = pytest.mark.e2e

ENV_FILE = """# written by the deploy pipeline
COMPOSE_PROJECT_NAME=ignored-because-of-p
export API_VERSION="v1.2.3"   # bumped by CI
LOG_LEVEL=info
"""


class AppCopy:
    """The sandbox's compose app in its own directory, port and project, with its own image lines.

    ``api_image``/``worker_image`` replace the compose file's image lines; ``env_file`` is
    written as the app directory's .env.
    """

    def __init__(self, production: Sandbox, *, api_image: str, worker_image: str | None = None,
                 env_file: str | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="rollbot-release-"))
        self.root.chmod(0o755)
        self.dir = self.root / "app"
        self.dir.mkdir()
        self.port = free_port()
        self.project = f"release{self.port}"
        text = production.compose_file.read_text()
        original_port = str(production.api_port)
        assert f"AZORA_PORT={original_port}" in text and "image: azora-api:" in text
        lines = []
        for line in text.replace(f"AZORA_PORT={original_port}", f"AZORA_PORT={self.port}"
                                 ).split("\n"):
            if line.strip().startswith("image: azora-api:"):
                line = f"    image: {api_image}"
            elif line.strip().startswith("image: azora-worker:") and worker_image:
                line = f"    image: {worker_image}"
            lines.append(line)
        self.file = self.dir / "docker-compose.yml"
        self.file.write_text("\n".join(lines))
        self.env_path = self.dir / ".env"
        if env_file is not None:
            self.env_path.write_text(env_file)
        for path in (self.root, *self.root.rglob("*")):
            shutil.chown(path, "prod-user", "prod-user")
        self.compose = ["docker-compose", "-p", self.project]
        self.base = f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        out = as_prod_user(*self.compose, "up", "-d", cwd=self.dir)
        assert out.returncode == 0, out.stderr

    def down(self) -> None:
        as_prod_user(*self.compose, "down", "--remove-orphans", "-t", "2", cwd=self.dir)
        shutil.rmtree(self.root, ignore_errors=True)

    def compose_images(self) -> str:
        """`docker-compose images` in the app directory: what compose says its containers run."""
        return as_prod_user(*self.compose, "images", cwd=self.dir).stdout

    def compose_config(self) -> str:
        """`docker-compose config`: the file as compose reads it, variables from .env filled in."""
        return as_prod_user(*self.compose, "config", cwd=self.dir).stdout

    def images(self) -> dict[str, str]:
        """service -> image of its running container, from Docker."""
        out = subprocess.run(
            ["docker", "ps", "--filter", f"label=com.docker.compose.project={self.project}",
             "--format", '{{.Label "com.docker.compose.service"}} {{.Image}} {{.ID}}'],
            capture_output=True, text=True, timeout=30, check=True)
        return {ln.split()[0]: ln.split()[1] for ln in out.stdout.splitlines() if ln.strip()}

    def container_ids(self) -> set[str]:
        out = subprocess.run(
            ["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={self.project}"],
            capture_output=True, text=True, timeout=30, check=True)
        return set(out.stdout.split())

    def backups(self) -> list[str]:
        return sorted(p.name for p in self.dir.iterdir() if ".rollbot-" in p.name)

    def runbook(self, runbook: Runbook, **changes: object) -> Runbook:
        """The sandbox runbook's production environment pointed at this copy."""
        env = runbook.environments["production"]
        update: dict[str, object] = {
            "health_url": f"{self.base}/health", "version_url": f"{self.base}/version",
            "smoke_urls": (), "database": None,
            "compose": env.compose.model_copy(update={"file": str(self.file),
                                                      "command": " ".join(self.compose)}),
            "timeouts": env.timeouts.model_copy(update={"emergency_health_s": 4}),
            **changes,
        }
        return runbook.model_copy(update={"environments": {
            **runbook.environments, "production": env.model_copy(update=update)}})


def roll_back_to_v122(by: str = "alice") -> RollbackRequest:
    return RollbackRequest(environment="production", procedure=ProcedureName.SIMPLE,
                           target=parse_version("v1.2.2"), requested_by=by,
                           reason="v1.2.3 health check fails")


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def tag_in_env(production: Sandbox) -> Iterator[AppCopy]:
    """An app whose compose file says `image: azora-api:${API_VERSION}`, set in its .env."""
    app = AppCopy(production, api_image="azora-api:${API_VERSION}", env_file=ENV_FILE)
    try:
        app.up()
        yield app
    finally:
        app.down()


# --- the tag in ${API_VERSION} --------------------------------------------------------------

async def test_a_tag_in_a_variable_is_switched_in_env_and_the_compose_file_is_left_alone(
        tag_in_env: AppCopy, runbook: Runbook, store: Store, http: httpx.AsyncClient) -> None:
    app = tag_in_env
    assert app.images()["api"] == "azora-api:v1.2.3"
    compose_before = app.file.read_bytes()
    bot = Rollbot(runbook=app.runbook(runbook), store=store, probe=HttpxProbe(http))

    plan = await bot.plan(roll_back_to_v122())
    variable = next(c for c in plan.preflight.checks if c.name == "Image tag variable")
    assert variable.ok and f"API_VERSION=v1.2.3 in {app.env_path}" in variable.detail
    assert plan.preflight.current == "v1.2.3"

    outcome = await bot.rollback(roll_back_to_v122())

    assert outcome.status is RunStatus.SUCCEEDED, outcome.message
    assert app.env_path.read_text() == ENV_FILE.replace('"v1.2.3"', '"v1.2.2"')
    assert app.file.read_bytes() == compose_before                 # the ${API_VERSION} line stays
    kept = [b for b in app.backups() if b.startswith(".env.rollbot-")]
    assert len(kept) == 1 and (app.dir / kept[0]).read_text() == ENV_FILE
    assert not [b for b in app.backups() if b.startswith("docker-compose.yml.rollbot-")]
    # compose itself reads v1.2.2 from .env, and its api container runs it
    assert "image: azora-api:v1.2.2" in app.compose_config()
    api_row = next(ln for ln in app.compose_images().splitlines() if "_api_1" in ln)
    assert api_row.split()[1:3] == ["azora-api", "v1.2.2"], api_row
    assert app.images()["api"] == "azora-api:v1.2.2"
    switch = next(s for s in outcome.steps if s.key == "switch_version")
    assert switch.status is StepStatus.SUCCEEDED


async def test_put_back_restores_env_from_its_copy(
        tag_in_env: AppCopy, runbook: Runbook, store: Store, http: httpx.AsyncClient) -> None:
    app = tag_in_env
    compose_before = app.file.read_bytes()
    bot = Rollbot(runbook=app.runbook(runbook), store=store, probe=HttpxProbe(http))
    runs: list[Run] = []

    async def cancel_during_switch(event: RunEvent) -> None:
        # Bob presses Cancel while the version is being switched: it stops after that step.
        if isinstance(event, StepStarted) and event.step.key == "switch_version":
            runs[0].cancel("bob")

    cancelled = await bot.rollback(roll_back_to_v122(), observers=[cancel_during_switch],
                                   on_run=runs.append)
    assert cancelled.status is RunStatus.CANCELLED, cancelled.message
    assert 'API_VERSION="v1.2.2"' in app.env_path.read_text()
    recoveries = Recoveries(bot)
    claim = await recoveries.choose(cancelled.run_id, choice=RecoveryChoice.PUT_BACK, by="bob")
    assert claim.moved and claim.offer is not None, claim.reason

    back = await recoveries.recover(claim.offer, by="bob")

    # v1.2.3 is back, as unhealthy as before; what matters here is that .env says so again.
    assert back.status is RunStatus.FAILED, back.message
    assert back.host_state == "api is back up on v1.2.3 (all services running) but NOT healthy"
    assert app.env_path.read_text() == ENV_FILE
    assert app.file.read_bytes() == compose_before
    assert app.images()["api"] == "azora-api:v1.2.3"
    steps = {s.key: s.status for s in back.steps}
    assert steps["put_back_compose"] is StepStatus.SUCCEEDED


async def test_a_tag_variable_set_nowhere_is_refused_by_preflight_and_nothing_changes(
        tag_in_env: AppCopy, runbook: Runbook, store: Store, http: httpx.AsyncClient) -> None:
    app = tag_in_env
    # Someone tidied .env after the deploy: API_VERSION is gone; the old containers still run.
    tidied = ENV_FILE.replace('export API_VERSION="v1.2.3"   # bumped by CI\n', "")
    app.env_path.write_text(tidied)
    shutil.chown(app.env_path, "prod-user", "prod-user")
    compose_before, containers_before = app.file.read_bytes(), app.container_ids()
    bot = Rollbot(runbook=app.runbook(runbook), store=store, probe=HttpxProbe(http))

    outcome = await bot.rollback(roll_back_to_v122())

    assert outcome.status is RunStatus.REFUSED
    assert outcome.message.startswith("Refused by pre-flight, nothing was changed.")
    assert "Image tag variable: on prod-user@127.0.0.1:" in outcome.message, outcome.message
    assert "API_VERSION is set neither in" in outcome.message
    assert outcome.steps == () or all(s.status is not StepStatus.SUCCEEDED
                                      for s in outcome.steps)
    assert app.env_path.read_text() == tidied and app.file.read_bytes() == compose_before
    assert app.container_ids() == containers_before and app.backups() == []
    refusals = await store.pool.fetch(
        "SELECT detail FROM audit_log WHERE kind = 'refusal' AND run_id = $1", outcome.run_id)
    assert any("API_VERSION" in r["detail"] for r in refusals)


# --- api and worker, one release ------------------------------------------------------------

@pytest.fixture
def worker_tags() -> Iterator[list[str]]:
    """Per-version tags of the sandbox's worker image, made for the test and removed after."""
    made: list[str] = []
    try:
        yield made
    finally:
        for ref in made:
            subprocess.run(["docker", "rmi", ref], capture_output=True, timeout=60)


def tag_worker(made: list[str], version: str) -> None:
    subprocess.run(["docker", "tag", "azora-worker:v1", f"azora-worker:{version}"],
                   check=True, timeout=30)
    made.append(f"azora-worker:{version}")


@pytest.fixture
def api_and_worker(production: Sandbox, worker_tags: list[str]) -> Iterator[AppCopy]:
    """An app whose release is api and worker, both on v1.2.3 (the worker tag made here)."""
    tag_worker(worker_tags, "v1.2.3")
    app = AppCopy(production, api_image="azora-api:v1.2.3", worker_image="azora-worker:v1.2.3")
    try:
        app.up()
        yield app
    finally:
        app.down()


RELEASE = {"api": "azora-api", "worker": "azora-worker"}


async def test_a_release_of_api_and_worker_is_switched_in_one_edit(
        api_and_worker: AppCopy, worker_tags: list[str], runbook: Runbook, store: Store,
        http: httpx.AsyncClient) -> None:
    app = api_and_worker
    tag_worker(worker_tags, "v1.2.2")
    compose_before = app.file.read_text()
    bot = Rollbot(runbook=app.runbook(runbook, services=RELEASE), store=store,
                  probe=HttpxProbe(http))

    plan = await bot.plan(roll_back_to_v122())
    assert any(s.title == "Switch api and worker to v1.2.2" for s in plan.steps), plan.steps
    present = next(c for c in plan.preflight.checks if c.name == "Target image present")
    assert "azora-api:v1.2.2 present" in present.detail
    assert "azora-worker:v1.2.2 present" in present.detail
    current = next(c for c in plan.preflight.checks if c.name == "Current version")
    assert current.detail == "api and worker run v1.2.3"

    outcome = await bot.rollback(roll_back_to_v122())

    assert outcome.status is RunStatus.SUCCEEDED, outcome.message
    assert app.file.read_text() == compose_before.replace("v1.2.3", "v1.2.2")
    assert [b for b in app.backups() if b.startswith("docker-compose.yml.rollbot-")] == \
        app.backups() and len(app.backups()) == 1             # one edit, one copy
    assert app.images() == {"api": "azora-api:v1.2.2", "worker": "azora-worker:v1.2.2"}
    confirm = next(s for s in outcome.steps if s.key == "confirm_services")
    assert confirm.status is StepStatus.SUCCEEDED


async def test_a_missing_worker_image_is_refused_by_preflight_before_anything_stops(
        api_and_worker: AppCopy, runbook: Runbook, store: Store,
        http: httpx.AsyncClient) -> None:
    app = api_and_worker                       # azora-worker:v1.2.2 was never made
    compose_before, containers_before = app.file.read_bytes(), app.container_ids()
    bot = Rollbot(runbook=app.runbook(runbook, services=RELEASE), store=store,
                  probe=HttpxProbe(http))

    outcome = await bot.rollback(roll_back_to_v122())

    assert outcome.status is RunStatus.REFUSED
    assert "Target image present: azora-worker:v1.2.2 is not on the host" in outcome.message, \
        outcome.message
    assert app.container_ids() == containers_before                  # nothing was stopped
    assert app.file.read_bytes() == compose_before and app.backups() == []
