"""The switch step's files: a ${VAR} tag read from .env as compose reads it, and changed there."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import dotenv
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.config import EnvironmentConfig
from bot.edges.host_facts import all_run, running_text, target_images_check
from bot.errors import ComposeEditError, HostError
from bot.model import CommandResult, ContainerState, ImageTag
from bot.procedures.compose_file import TagVariable, find_image_line, switch_image_tag
from bot.procedures.env_file import env_values, set_env_value
from bot.procedures.release_files import (
    env_file_path,
    parse_release,
    read_release,
    shell_variables_command,
    switch_release,
    tag_variables_check,
)

ENV_FILE = """# azora production
COMPOSE_PROJECT_NAME=azora

export API_VERSION="v1.2.3"   # bumped by CI
WORKER_VERSION='v1.2.3'
LOG_LEVEL=info # not a tag
EMPTY=
"""


def environment(**changes: object) -> EnvironmentConfig:
    data: dict[str, object] = {
        "service": "api", "image": "azora-api",
        "health_url": "http://127.0.0.1:8080/health",
        "version_url": "http://127.0.0.1:8080/version",
        "ssh": {"host": "prod", "user": "prod-user", "key_file": "/k", "known_hosts": "/h"},
        "compose": {"file": "/srv/azora/docker-compose.yml"},
    }
    data.update(changes)
    if "services" in changes:
        del data["service"], data["image"]
    return EnvironmentConfig.model_validate(data)


def compose(api: str, worker: str = "azora-worker:v1.2.3") -> str:
    return ("version: \"2.4\"\nservices:\n  api:\n"
            f"    image: {api}   # the public API\n    network_mode: host\n"
            f"  worker:\n    image: {worker}\n")


# --- .env as compose reads it -------------------------------------------------------------

def test_values_are_read_as_compose_reads_them() -> None:
    assert env_values(ENV_FILE) == dict(dotenv.dotenv_values(stream=io.StringIO(ENV_FILE),
                                                             interpolate=False))
    assert env_values(ENV_FILE)["API_VERSION"] == "v1.2.3"
    assert env_values(ENV_FILE)["LOG_LEVEL"] == "info"


@pytest.mark.parametrize("line", [
    "API_VERSION=v1.2.3", 'API_VERSION="v1.2.3"', "API_VERSION='v1.2.3'",
    "export API_VERSION=v1.2.3", "  API_VERSION = v1.2.3  # CI writes this",
    'API_VERSION="v1.2.3" # quoted, then a comment',
])
def test_only_the_value_changes_in_every_style(line: str) -> None:
    text = f"# head\nOTHER=x\n{line}\nTAIL='y'\n"
    changed = set_env_value(text, key="API_VERSION", value="v1.2.2")
    assert changed == text.replace("v1.2.3", "v1.2.2")
    assert env_values(changed)["API_VERSION"] == "v1.2.2"


def test_the_last_binding_is_the_one_compose_reads_and_the_one_changed() -> None:
    text = "API_VERSION=v1.0.0\nAPI_VERSION=v1.2.3\n"
    assert env_values(text)["API_VERSION"] == "v1.2.3"
    assert set_env_value(text, key="API_VERSION", value="v1.2.2") == (
        "API_VERSION=v1.0.0\nAPI_VERSION=v1.2.2\n")


def test_a_multiline_quoted_value_does_not_hide_or_fake_a_binding() -> None:
    text = 'CERT="line one\nAPI_VERSION=fake\n"\nAPI_VERSION=v1.2.3\n'
    assert env_values(text) == dict(dotenv.dotenv_values(stream=io.StringIO(text),
                                                         interpolate=False))
    assert set_env_value(text, key="API_VERSION", value="v1.2.2").endswith("API_VERSION=v1.2.2\n")


@pytest.mark.parametrize(("text", "message"), [
    ("OTHER=1\n", "does not set API_VERSION"),
    ("API_VERSION\n", "does not set API_VERSION"),
    ("API_VERSION=${BASE_VERSION}\n", "refers to another variable"),
])
def test_a_value_rollbot_cannot_change_is_refused(text: str, message: str) -> None:
    with pytest.raises(ComposeEditError, match=message):
        set_env_value(text, key="API_VERSION", value="v1.2.2")


_lines = st.lists(st.one_of(
    st.from_regex(r"#[ -~]{0,20}", fullmatch=True),
    st.from_regex(r"(export )?[A-Z_]{1,8}=[a-z0-9.]{0,8}( # [a-z ]{0,8})?", fullmatch=True),
    st.from_regex(r"[A-Z_]{1,8}=\"[a-z0-9 .#]{0,8}\"", fullmatch=True),
    st.just(""),
), max_size=8)


@given(_lines, _lines)
def test_any_surrounding_file_stays_byte_identical(before: list[str], after: list[str]) -> None:
    text = "\n".join([*before, "API_VERSION=v1.2.3", *after]) + "\n"
    if "API_VERSION=" in "\n".join(after):
        return  # a later binding would be the one compose reads
    changed = set_env_value(text, key="API_VERSION", value="v1.2.2")
    assert changed == text.replace("API_VERSION=v1.2.3", "API_VERSION=v1.2.2")


# --- the compose line ---------------------------------------------------------------------

@pytest.mark.parametrize(("written", "variable"), [
    ("azora-api:${API_VERSION}", TagVariable("API_VERSION")),
    ("azora-api:$API_VERSION", TagVariable("API_VERSION")),
    ("azora-api:${API_VERSION:-v1.2.3}", TagVariable("API_VERSION", ":-", "v1.2.3")),
    ("azora-api:${API_VERSION-v1.2.3}", TagVariable("API_VERSION", "-", "v1.2.3")),
    ('"registry:5000/azora-api:${API_VERSION:?required}"',
     TagVariable("API_VERSION", ":?", "required")),
])
def test_a_tag_variable_is_read_in_every_form_compose_accepts(written: str,
                                                             variable: TagVariable) -> None:
    line = find_image_line(compose(written), service="api", image="azora-api")
    assert line.variable == variable


@pytest.mark.parametrize(("variable", "values", "tag"), [
    (TagVariable("V"), {"V": "v1.2.3"}, "v1.2.3"),
    (TagVariable("V"), {}, None),
    (TagVariable("V"), {"V": ""}, None),
    (TagVariable("V", ":-", "v1"), {}, "v1"),
    (TagVariable("V", ":-", "v1"), {"V": ""}, "v1"),
    (TagVariable("V", "-", "v1"), {"V": ""}, None),
    (TagVariable("V", "-", "v1"), {"V": "v2"}, "v2"),
    (TagVariable("V", "?", "e"), {}, None),
])
def test_variables_resolve_as_compose_resolves_them(variable: TagVariable,
                                                    values: dict[str, str],
                                                    tag: str | None) -> None:
    assert variable.resolve(values) == tag


def test_the_compose_line_of_a_variable_tag_is_never_overwritten() -> None:
    with pytest.raises(ComposeEditError, match=r"changed in \.env"):
        switch_image_tag(compose("azora-api:${API_VERSION}"), service="api", image="azora-api",
                         new_tag="v1.2.2")


def test_a_tag_mixing_text_and_variables_is_refused_clearly() -> None:
    with pytest.raises(ComposeEditError, match="taken whole from one variable"):
        find_image_line(compose("azora-api:v${MAJOR}.2"), service="api", image="azora-api")


# --- where compose reads .env -------------------------------------------------------------

@pytest.mark.parametrize(("command", "path"), [
    ("docker-compose", "/srv/azora/.env"),
    ("docker-compose -p shop", "/srv/azora/.env"),
    ("docker-compose --env-file prod.env", "/srv/azora/prod.env"),
    ("docker-compose --env-file=/etc/azora/env", "/etc/azora/env"),
    ("docker-compose --project-directory /srv/app", "/srv/app/.env"),
    ("docker compose --project-directory=../common", "/srv/common/.env"),
])
def test_the_env_file_is_where_compose_reads_it(command: str, path: str) -> None:
    env = environment(compose={"file": "/srv/azora/docker-compose.yml", "command": command})
    assert env_file_path(env.compose) == path


# --- one release, one edit per file -------------------------------------------------------

def test_a_variable_tag_is_switched_in_env_and_the_compose_file_is_untouched() -> None:
    env = environment()
    text = compose("azora-api:${API_VERSION}")
    release = parse_release(env, compose_text=text, env_text=ENV_FILE)
    assert release.tag == "v1.2.3"
    change = switch_release(release, "v1.2.2")
    assert change.compose_text is None
    assert change.env_text == ENV_FILE.replace('"v1.2.3"', '"v1.2.2"')
    assert "left as is" in change.changes[0]


def test_a_release_of_two_services_is_one_edit_of_each_file() -> None:
    env = environment(services={"api": "azora-api", "worker": "azora-worker"})
    text = compose("azora-api:${API_VERSION}", "azora-worker:v1.2.3")
    release = parse_release(env, compose_text=text, env_text=ENV_FILE)
    assert release.tags == {"api": "v1.2.3", "worker": "v1.2.3"}
    change = switch_release(release, "v1.2.2")
    assert change.compose_text == text.replace("azora-worker:v1.2.3", "azora-worker:v1.2.2")
    assert change.env_text is not None and 'API_VERSION="v1.2.2"' in change.env_text
    assert parse_release(env, compose_text=change.compose_text,
                         env_text=change.env_text).names("v1.2.2")


def test_services_on_different_versions_are_described_honestly() -> None:
    env = environment(services={"api": "azora-api", "worker": "azora-worker"})
    release = parse_release(env, compose_text=compose("azora-api:v1.2.3", "azora-worker:v1.2.2"),
                            env_text=None)
    assert release.describe() == "api: v1.2.3, worker: v1.2.2"
    assert not release.names("v1.2.3")


def test_an_unset_variable_is_shown_as_written_and_cannot_be_switched() -> None:
    release = parse_release(environment(), compose_text=compose("azora-api:${API_VERSION}"),
                            env_text="OTHER=1\n")
    assert release.tag == "${API_VERSION}"
    with pytest.raises(ComposeEditError, match="does not set API_VERSION"):
        switch_release(release, "v1.2.2")


def test_the_shell_check_asks_for_names_only() -> None:
    command = shell_variables_command(("API_VERSION", "WORKER_VERSION"))
    assert "printenv" in command and "API_VERSION" in command
    assert "echo \"set $n\"" in command  # the name, never the value


# --- pre-flight's check of the tag variable (the host's answers faked; the e2e tests run it) --

class Host:
    """A host whose session environment sets ``shell`` and whose files are ``files``."""

    name = "prod-user@web-1:22"

    def __init__(self, files: dict[str, str], shell: tuple[str, ...] = ()) -> None:
        self.files, self.shell = files, shell
        self.commands: list[str] = []

    async def run(self, command: str, *, timeout: float, on_line: object = None,
                  check: bool = True) -> CommandResult:
        self.commands.append(command)
        said = "".join(f"set {n}\n" for n in self.shell if n in command)
        return CommandResult(command=command, exit_status=0, output=said, truncated=False,
                             duration_s=0.0)

    async def read_file(self, path: str) -> str:
        if path not in self.files:
            raise HostError(f"{path} does not exist on {self.name}")
        return self.files[path]

    async def write_file_atomic(self, path: str, text: str, *, backup_path: str) -> None:
        raise AssertionError("pre-flight never writes")


COMPOSE_FILE = "/srv/azora/docker-compose.yml"


async def test_a_variable_set_in_the_ssh_environment_is_refused_in_one_sentence() -> None:
    host = Host({COMPOSE_FILE: compose("azora-api:${API_VERSION}"), "/srv/azora/.env": ENV_FILE},
                shell=("API_VERSION",))
    check = await tag_variables_check(host, await read_release(host, environment()))
    assert check is not None and not check.ok
    assert check.detail.startswith("on prod-user@web-1:22, API_VERSION is set in the SSH "
                                   "session's environment, which compose reads before "
                                   "/srv/azora/.env, so changing .env would change nothing")


@pytest.mark.parametrize(("files", "said"), [
    ({"/srv/azora/.env": "LOG_LEVEL=info\n"}, "set neither in /srv/azora/.env nor in the SSH"),
    ({}, "set neither in /srv/azora/.env (there is no such file) nor"),
    ({"/srv/azora/.env": "API_VERSION=\n"}, "API_VERSION is empty in /srv/azora/.env"),
])
async def test_a_variable_set_nowhere_compose_reads_is_refused_naming_host_and_variable(
        files: dict[str, str], said: str) -> None:
    host = Host({COMPOSE_FILE: compose("azora-api:${API_VERSION}"), **files})
    check = await tag_variables_check(host, await read_release(host, environment()))
    assert check is not None and not check.ok and check.name == "Image tag variable"
    assert check.detail.startswith("on prod-user@web-1:22, ") and said in check.detail


async def test_a_default_in_the_compose_file_is_named_but_not_silently_edited() -> None:
    host = Host({COMPOSE_FILE: compose("azora-api:${API_VERSION:-v1.2.3}"),
                 "/srv/azora/.env": "LOG_LEVEL=info\n"})
    release = await read_release(host, environment())
    assert release.tag == "v1.2.3"                      # what compose runs
    check = await tag_variables_check(host, release)
    assert check is not None and not check.ok and "falls back to 'v1.2.3'" in check.detail


async def test_a_tag_written_out_asks_nothing_more_of_the_host() -> None:
    host = Host({COMPOSE_FILE: compose("azora-api:v1.2.3")})
    release = await read_release(host, environment())
    assert await tag_variables_check(host, release) is None
    assert host.commands == [] and release.env_text is None


# --- what runs: every service of the release, honestly --------------------------------------

def container(service: str, image: str, state: str = "running") -> ContainerState:
    return ContainerState(name=f"azora_{service}_1", service=service, image=image, state=state,
                          status="Up 3 minutes" if state == "running" else "Exited (0)")


@pytest.mark.parametrize(("containers", "said"), [
    ([container("api", "azora-api:v1.2.3"), container("worker", "azora-worker:v1.2.3")],
     "api and worker run v1.2.3"),
    ([container("api", "azora-api:v1.2.3"), container("worker", "azora-worker:v1.2.2")],
     "api runs v1.2.3, worker runs v1.2.2"),
    ([container("api", "azora-api:v1.2.3"), container("worker", "azora-worker:v1.2.3", "exited")],
     "api runs v1.2.3, no worker container runs"),
])
def test_who_runs_what_is_said_per_service_when_they_differ(containers: list[ContainerState],
                                                             said: str) -> None:
    env = environment(services={"api": "azora-api", "worker": "azora-worker"})
    assert running_text(containers, env) == said
    assert all_run(containers, env, "v1.2.3") is (said == "api and worker run v1.2.3")


def test_one_service_reads_as_it_always_did() -> None:
    env = environment()
    assert running_text([container("api", "azora-api:v1.2.3"),
                         container("worker", "azora-worker:v1")], env) == "api runs v1.2.3"


def test_the_target_image_of_every_service_must_be_present() -> None:
    def tags(image: str, *versions: str) -> list[ImageTag]:
        return [ImageTag(repository=image, tag=v, version=None, created=datetime(2026, 11, 27,
                                                                                tzinfo=UTC),
                         image_id="sha256:0") for v in versions]
    missing = target_images_check({"azora-api": tags("azora-api", "v1.2.2", "v1.2.3"),
                                   "azora-worker": tags("azora-worker", "v1.2.3")}, "v1.2.2")
    assert not missing.ok
    assert missing.detail == "azora-worker:v1.2.2 is not on the host (present: v1.2.3)"
    present = target_images_check({"azora-api": tags("azora-api", "v1.2.2")}, "v1.2.2")
    assert present.ok and present.detail == "azora-api:v1.2.2 present, built 2026-11-27 00:00 UTC"
