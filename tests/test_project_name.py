"""Pre-flight tells compose's project name without starting compose, and asks it when unsure."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.config import ComposeConfig, load_runbook
from bot.errors import HostError
from bot.model import CommandResult, ContainerState, ImageTag, ProcedureName, RollbackRequest
from bot.ports import LineSink
from bot.preflight import run_preflight
from bot.prerequisites import compose_naming, compose_resolves_check
from bot.procedures.project_name import (
    ProjectNaming,
    normalize_name,
    predict_project_name,
)
from bot.procedures.release_files import ReleaseFiles, parse_release
from bot.versions import parse_version

FILE = "/srv/shop/docker-compose.yml"
ENV_FILE = "/srv/shop/.env"
COMPOSE_TEXT = "services:\n  api:\n    image: azora-api:v1.2.3\n"


def predict(command: str = "docker-compose", *, env_text: str | None = None,
            in_shell: tuple[str, ...] = (), compose_text: str = COMPOSE_TEXT,
            file: str = FILE, env_file: str = ENV_FILE) -> ProjectNaming:
    return predict_project_name(ComposeConfig(file=file, command=command),
                                compose_text=compose_text, env_text=env_text,
                                env_file=env_file, in_shell=in_shell)


# --- each source of the name, in compose's order ----------------------------------------------

def test_p_in_the_command_names_the_project_whatever_env_and_shell_say() -> None:
    for command in ("docker-compose -p web1", "docker-compose --project-name web1",
                    "docker-compose --project-name=web1", "docker compose -p web1",
                    "/usr/local/bin/docker-compose --no-ansi -p 'web1'"):
        naming = predict(command, env_text="COMPOSE_PROJECT_NAME=shop\n",
                         in_shell=("COMPOSE_PROJECT_NAME",))
        assert naming == ProjectNaming("web1", "from -p in compose.command"), command


def test_compose_project_name_in_env_comes_before_the_directory() -> None:
    naming = predict(env_text="# the shop\nexport COMPOSE_PROJECT_NAME='shop' # named\n")
    assert naming == ProjectNaming("shop", f"from COMPOSE_PROJECT_NAME in {ENV_FILE}")


def test_the_last_binding_in_env_wins_as_in_compose() -> None:
    naming = predict(env_text="COMPOSE_PROJECT_NAME=old\nCOMPOSE_PROJECT_NAME=shop\n")
    assert naming.name == "shop"


def test_a_byte_order_mark_does_not_hide_the_first_key() -> None:
    # compose reads .env as utf-8-sig; rollbot's SFTP read keeps the mark in the text.
    assert predict(env_text="\ufeffCOMPOSE_PROJECT_NAME=shop\n").name == "shop"


def test_without_p_or_env_the_directory_names_the_project() -> None:
    naming = predict(env_text="LOG_LEVEL=info\n")
    assert naming == ProjectNaming("shop", "from the directory's name, /srv/shop")
    assert predict(env_text=None).name == "shop"      # no .env at all


def test_project_directory_in_the_command_moves_the_name_with_it() -> None:
    naming = predict("docker-compose --project-directory ../azora", env_file="/srv/azora/.env")
    assert naming == ProjectNaming("azora", "from the directory's name, /srv/azora")


@pytest.mark.parametrize(("directory", "name"), [
    ("Shop", "shop"), ("my.app", "myapp"), ("web 1", "web1"), ("api_v2-x", "api_v2-x"),
    ("Été2", "t2"),
])
def test_a_directory_name_is_normalised_as_compose_does(directory: str, name: str) -> None:
    assert normalize_name(directory) == name
    assert predict(file=f"/srv/{directory}/docker-compose.yml").name == name


# --- every uncertain case leaves the question to compose --------------------------------------

@pytest.mark.parametrize(("kwargs", "why"), [
    ({"in_shell": ("COMPOSE_PROJECT_NAME",)},
     "COMPOSE_PROJECT_NAME set in the SSH session's environment"),
    ({"in_shell": ("COMPOSE_FILE", "COMPOSE_PATH_SEPARATOR")},
     "COMPOSE_FILE and COMPOSE_PATH_SEPARATOR set in the SSH session's environment"),
    ({"env_text": "COMPOSE_FILE=a.yml:b.yml\n"}, f"COMPOSE_FILE set in {ENV_FILE}"),
    ({"env_text": "COMPOSE_PROJECT_NAME=${TEAM}-shop\n"}, "refers to a variable"),
    ({"env_text": "COMPOSE_PROJECT_NAME=\n"}, "COMPOSE_PROJECT_NAME is empty"),
    ({"env_text": "COMPOSE_PROJECT_NAME=Shop\n"}, "1.29 would change it, v2 refuse it"),
    ({"command": "docker-compose -p My.Shop"}, "'My.Shop' (-p in compose.command)"),
    ({"compose_text": "name: shop\n" + COMPOSE_TEXT}, "top-level name:"),
    ({"command": "docker-compose -f base.yml"}, "'-f'"),
    ({"command": "docker-compose -p=web1"}, "'-p=web1'"),
    ({"command": "docker-compose -p $PROJECT"}, "-p has no value rollbot can read"),
    ({"command": "docker-compose -p a -p b"}, "gives -p twice"),
    ({"command": "docker-compose -p"}, "-p has no value"),
    ({"command": "sudo docker-compose"}, "neither docker-compose nor docker compose"),
    ({"command": "podman-compose"}, "neither docker-compose nor docker compose"),
    ({"command": "docker-compose --env-file prod.env", "env_file": "/srv/shop/prod.env"},
     "--env-file names /srv/shop/prod.env, which does not exist"),
    ({"file": "/srv/_shop/docker-compose.yml"}, "no name that 1.29 and v2 agree on"),
    ({"file": "/srv/!!!/docker-compose.yml"}, "no name that 1.29 and v2 agree on"),
])
def test_what_the_prediction_cannot_be_sure_of_is_left_to_compose(kwargs: dict[str, object],
                                                                    why: str) -> None:
    naming = predict(**kwargs)  # type: ignore[arg-type]
    assert not naming.certain and naming.name is None
    assert why in naming.source, naming.source


def test_harmless_options_keep_the_prediction() -> None:
    naming = predict("docker-compose --no-ansi --log-level ERROR --env-file prod.env",
                     env_text="COMPOSE_PROJECT_NAME=shop\n", env_file="/srv/shop/prod.env")
    assert naming.name == "shop"


# --- the check: compared with the running containers, compose asked only when needed ----------

ENV = load_runbook(Path(__file__).parent / "data" / "rollbot.example.toml").environments[
    "production"]


class Host:
    """A host whose `docker-compose ps` lists ``compose_lists``; remembers every command."""

    name = "prod-user@web-1:22"

    def __init__(self, compose_lists: str = "", files: dict[str, str] | None = None,
                 shell: tuple[str, ...] = ()) -> None:
        self.compose_lists = compose_lists
        self.files = files or {}
        self.shell = shell
        self.commands: list[str] = []
        self.reads: list[str] = []

    async def run(self, command: str, *, timeout: float, on_line: LineSink | None = None,
                  check: bool = True) -> CommandResult:
        self.commands.append(command)
        if "printenv" in command:
            out = "".join(f"set {n}\n" for n in self.shell if n in command)
        else:
            out = self.compose_lists
        return CommandResult(command=command, exit_status=0, output=out, truncated=False,
                             duration_s=0.0)

    async def read_file(self, path: str) -> str:
        self.reads.append(path)
        if path not in self.files:
            raise HostError(f"{path} does not exist on {self.name}")
        return self.files[path]

    async def write_file_atomic(self, path: str, text: str, *, backup_path: str) -> None:
        raise AssertionError("pre-flight never writes")


def api(project: str, state: str = "running") -> ContainerState:
    return ContainerState(name=f"{project}_api_1", service="api", image="azora-api:v1.2.3",
                          state=state, status="Up 3 minutes", project=project)


async def check(host: Host, naming: ProjectNaming, *containers: ContainerState) -> tuple[bool, str]:
    found = await compose_resolves_check(
        host=host, env=ENV, naming=naming, containers=list(containers),
        api_sees_service=any(c.up for c in containers))
    assert found.name == "Compose project"
    return found.ok, found.detail


async def test_a_certain_name_that_docker_shows_running_passes_without_starting_compose() -> None:
    host = Host()
    ok, detail = await check(host, ProjectNaming("azora", "from -p in compose.command"),
                             api("azora"))
    assert ok and host.commands == []
    assert "names it 'azora' (from -p in compose.command)" in detail
    assert detail.startswith("api runs in ")


async def test_a_certain_name_that_differs_from_the_running_project_is_refused_naming_both(
) -> None:
    host = Host()
    naming = ProjectNaming("shop2", f"from COMPOSE_PROJECT_NAME in {ENV_FILE}")
    ok, detail = await check(host, naming, api("shop"))
    assert not ok and host.commands == []
    assert f"would act on project 'shop2' (from COMPOSE_PROJECT_NAME in {ENV_FILE})" in detail
    assert "belong to project 'shop'" in detail and "prod-user@web-1:22" in detail


@pytest.mark.parametrize("containers", [
    (),                                         # nothing runs: nothing to compare with
    (api("azora", state="exited"),),
    (api(""),),                                 # a container without the label
    (api("azora"), api("old")),                 # two projects run: compose says which it acts on
])
async def test_compose_is_asked_when_docker_gives_nothing_to_compare(
        containers: tuple[ContainerState, ...]) -> None:
    host = Host(compose_lists="api\n" if any(c.up for c in containers) else "")
    ok, _ = await check(host, ProjectNaming("azora", "from -p in compose.command"), *containers)
    assert ok and len(host.commands) == 1 and " ps --services " in host.commands[0]


async def test_an_uncertain_name_asks_compose_as_before() -> None:
    lists_nothing = Host(compose_lists="")
    ok, detail = await check(lists_nothing, ProjectNaming(None, "COMPOSE_FILE set"), api("shop"))
    assert not ok and "lists no running api" in detail
    assert len(lists_nothing.commands) == 1


def release(text: str = COMPOSE_TEXT, env_text: str | None = None) -> ReleaseFiles:
    env = ENV.model_copy(update={"compose": ComposeConfig(file=FILE)})
    return parse_release(env, compose_text=text, env_text=env_text)


async def test_the_env_file_is_read_once_for_the_name_and_not_when_p_decides() -> None:
    env = ENV.model_copy(update={"compose": ComposeConfig(file=FILE)})
    host = Host(files={ENV_FILE: "COMPOSE_PROJECT_NAME=shop\n"})
    naming = await compose_naming(host=host, env=env, release=release(), in_shell=frozenset())
    assert naming.name == "shop" and host.reads == [ENV_FILE]

    # A ${VAR} tag: read_release already read .env; its text is reused.
    tagged = release("services:\n  api:\n    image: azora-api:${API_VERSION}\n",
                     env_text="API_VERSION=v1.2.3\nCOMPOSE_PROJECT_NAME=shop\n")
    again = Host()
    assert (await compose_naming(host=again, env=env, release=tagged,
                                 in_shell=frozenset())).name == "shop"
    assert again.reads == []

    with_p = env.model_copy(update={"compose": ComposeConfig(file=FILE,
                                                             command="docker-compose -p web1")})
    quiet = Host()
    assert (await compose_naming(host=quiet, env=with_p, release=release(),
                                 in_shell=frozenset())).name == "web1"
    assert quiet.reads == [] and quiet.commands == []


async def test_an_env_file_that_cannot_be_read_leaves_the_name_to_compose() -> None:
    class Unreadable(Host):
        async def read_file(self, path: str) -> str:
            raise HostError(f"reading {path} on {self.name}: permission denied")

    env = ENV.model_copy(update={"compose": ComposeConfig(file=FILE)})
    naming = await compose_naming(host=Unreadable(), env=env, release=release(),
                                  in_shell=frozenset())
    assert not naming.certain and "could not be read" in naming.source


class Docker:
    """Docker facts of a host running api v1.2.3 in compose project ``project``."""

    via = "the Docker API"

    def __init__(self, project: str) -> None:
        self.project = project

    async def image_tags(self, repository: str) -> list[ImageTag]:
        return [ImageTag(repository=repository, tag=t, version=parse_version(t),
                         created=datetime(2026, 11, 27, tzinfo=UTC), image_id=f"sha256:{t}")
                for t in ("v1.2.3", "v1.2.2")]

    async def compose_containers(self, compose: ComposeConfig) -> list[ContainerState]:
        return [api(self.project)]


@pytest.mark.parametrize(("project", "ok"), [("shop", True), ("shop-old", False)])
async def test_pre_flight_asks_the_shell_once_and_never_starts_compose_when_it_is_sure(
        project: str, ok: bool) -> None:
    env = ENV.model_copy(update={"compose": ComposeConfig(file=FILE)})
    host = Host(files={FILE: "services:\n  api:\n    image: azora-api:${API_VERSION}\n",
                       ENV_FILE: "API_VERSION=v1.2.3\nCOMPOSE_PROJECT_NAME=shop\n"})
    pre = await run_preflight(host=host, docker=Docker(project), env=env, request=RollbackRequest(
        environment="production", procedure=ProcedureName.SIMPLE,
        target=parse_version("v1.2.2"), requested_by="alice"))
    compose_check = next(c for c in pre.checks if c.name == "Compose project")
    assert compose_check.ok is ok and pre.ok is ok, pre.refusal
    # One command asked about the tag variable and compose's variables; .env was read once.
    assert len(host.commands) == 1 and "printenv" in host.commands[0]
    assert "API_VERSION" in host.commands[0] and "COMPOSE_PROJECT_NAME" in host.commands[0]
    assert host.reads.count(ENV_FILE) == 1
    if not ok:
        assert "'shop' (from COMPOSE_PROJECT_NAME" in pre.refusal and "'shop-old'" in pre.refusal
