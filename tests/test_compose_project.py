"""The compose project as compose names it: .env, -p, name: or the directory, seen by labels."""

import json

import pytest

from bot.config import ComposeConfig
from bot.edges.docker import CliDockerFacts
from bot.model import CommandResult
from bot.ports import LineSink

FILE = "/srv/shop/docker-compose.yml"


def row(name: str, project: str, *, workdir: str | None = "/srv/shop",
        files: str | None = FILE, state: str = "running") -> str:
    labels = [f"com.docker.compose.project={project}", "com.docker.compose.service=api"]
    if files is not None:
        labels.append(f"com.docker.compose.project.config_files={files}")
    if workdir is not None:
        labels.append(f"com.docker.compose.project.working_dir={workdir}")
    return json.dumps({"Names": name, "Image": "azora-api:v1.2.2", "State": state,
                       "Status": "Up 2 minutes" if state == "running" else "Exited (0)",
                       "Labels": ",".join(labels)})


class DockerPs:
    """A host whose `docker ps` lists the given rows; remembers the commands."""

    name = "prod"

    def __init__(self, *rows: str) -> None:
        self.output = "\n".join(rows)
        self.commands: list[str] = []

    async def run(self, command: str, *, timeout: float, on_line: LineSink | None = None,
                  check: bool = True) -> CommandResult:
        self.commands.append(command)
        return CommandResult(command=command, exit_status=0, output=self.output,
                             truncated=False, duration_s=0.1)

    async def read_file(self, path: str) -> str:
        raise AssertionError("not used")

    async def write_file_atomic(self, path: str, text: str, *, backup_path: str) -> None:
        raise AssertionError("not used")


async def names(host: DockerPs, compose: ComposeConfig) -> list[str]:
    return [c.name for c in await CliDockerFacts(host).compose_containers(compose)]


async def test_a_project_named_in_env_is_found_by_where_compose_ran() -> None:
    # COMPOSE_PROJECT_NAME=shop in /srv/shop/.env: the containers say "shop", not the directory.
    host = DockerPs(row("shop_api_1", "shop"), row("other_api_1", "other", workdir="/srv/other",
                                                   files="/srv/other/docker-compose.yml"))
    assert await names(host, ComposeConfig(file=FILE)) == ["shop_api_1"]
    assert "label=com.docker.compose.project " in host.commands[0] + " "


async def test_the_working_dir_alone_or_the_config_file_alone_is_enough() -> None:
    host = DockerPs(row("a_api_1", "a", files=None), row("b_api_1", "b", workdir=None))
    assert await names(host, ComposeConfig(file=FILE)) == ["a_api_1", "b_api_1"]


@pytest.mark.parametrize("command", ["docker-compose -p shop", "docker-compose --project-name shop",
                                     "docker-compose --project-name=shop"])
async def test_a_project_given_with_p_in_the_command_is_matched_by_name(command: str) -> None:
    compose = ComposeConfig(file=FILE, command=command)
    assert compose.named_project == "shop" and compose.project_name == "shop"
    host = DockerPs(row("shop_api_1", "shop"), row("x_api_1", "x"))
    assert await names(host, compose) == ["shop_api_1"]
    assert "label=com.docker.compose.project=shop" in host.commands[0]


async def test_an_old_compose_without_location_labels_falls_back_to_the_directory_name() -> None:
    host = DockerPs(row("shop_api_1", "shop", workdir=None, files=None),
                    row("app_api_1", "app", workdir=None, files=None))
    assert await names(host, ComposeConfig(file=FILE)) == ["shop_api_1"]


async def test_left_overs_of_a_former_project_name_in_the_same_directory_are_not_counted() -> None:
    host = DockerPs(row("shop_api_1", "shop"), row("old_api_1", "old", state="exited"))
    assert await names(host, ComposeConfig(file=FILE)) == ["shop_api_1"]


async def test_a_configured_project_wins_over_labels() -> None:
    compose = ComposeConfig(file=FILE, project="azora")
    assert compose.named_project == "azora"
    host = DockerPs(row("shop_api_1", "shop"))
    assert await names(host, compose) == []


def test_messages_name_the_project_by_name_when_told_else_by_its_compose_file() -> None:
    assert ComposeConfig(file=FILE, project="shop").described == "compose project 'shop'"
    assert ComposeConfig(file=FILE, command="docker-compose -p shop").described == \
        "compose project 'shop'"
    assert ComposeConfig(file=FILE).described == f"the compose project of {FILE}"


def test_a_p_name_is_matched_as_compose_normalises_it() -> None:
    """compose 1.29 lowercases `-p Shop` and drops what is not [-_a-z0-9]: Docker's label says
    "shop", so rollbot must look for "shop" too."""
    assert ComposeConfig(file=FILE, command="docker-compose -p Shop").named_project == "shop"
    assert ComposeConfig(file=FILE, command="docker-compose -p my.app").project_name == "myapp"
