"""Changing the version in the compose file replaces `nano docker-compose.yml`."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.errors import ComposeEditError
from bot.procedures.compose_file import find_image_line, switch_image_tag

COMPOSE = """version: "2.4"
# production stack
services:
  api:
    # the public API
    image: azora-api:v1.2.3   # bumped by CI
    network_mode: host
    environment:
      - IMAGE=azora-api:v9.9.9
  worker:
    image: "azora-worker:v1"
    depends_on:
      - api
"""


def test_only_the_service_tag_changes_and_everything_else_survives() -> None:
    change = switch_image_tag(COMPOSE, service="api", image="azora-api", new_tag="v1.2.2")
    assert change.old_tag == "v1.2.3"
    assert change.text == COMPOSE.replace("azora-api:v1.2.3", "azora-api:v1.2.2")


def test_quotes_are_kept() -> None:
    change = switch_image_tag(COMPOSE, service="worker", image="azora-worker", new_tag="v0")
    assert '    image: "azora-worker:v0"' in change.text


def test_registry_prefixed_images_match() -> None:
    text = "services:\n  api:\n    image: registry.example.com:5000/azora-api:v1.2.3\n"
    change = switch_image_tag(text, service="api", image="azora-api", new_tag="v1.2.2")
    assert "registry.example.com:5000/azora-api:v1.2.2" in change.text


def test_version_one_format_without_services_key() -> None:
    text = "api:\n  image: azora-api:v1.2.3\nworker:\n  image: w:v1\n"
    assert find_image_line(text, service="api", image="azora-api").tag == "v1.2.3"


@pytest.mark.parametrize(("text", "message"), [
    ("services:\n  web:\n    image: azora-api:v1\n", "no service 'api'"),
    ("services:\n  api:\n    build: .\n", "no 'image:' line"),
    ("services:\n  api:\n    image: other:v1\n", "not the configured 'azora-api'"),
    ("services:\n  api:\n    image: azora-api@sha256:abc\n", "pins its image by digest"),
    ("services:\n  api:\n    build:\n      image: azora-api:v1\n", "no 'image:' line"),
])
def test_refuses_clearly_when_the_line_is_not_there(text: str, message: str) -> None:
    with pytest.raises(ComposeEditError, match=message):
        switch_image_tag(text, service="api", image="azora-api", new_tag="v1.2.2")


_names = st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True)
_tags = st.from_regex(r"v[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}", fullmatch=True)


@given(services=st.lists(st.tuples(_names, _tags), min_size=1, max_size=5,
                         unique_by=lambda s: s[0]),
       pick=st.integers(0, 4), new_tag=_tags, indent=st.sampled_from([2, 4]))
def test_switching_one_service_never_touches_another(
    services: list[tuple[str, str]], pick: int, new_tag: str, indent: int
) -> None:
    pad = " " * indent
    text = "services:\n" + "".join(
        f"{pad}{name}:\n{pad}{pad}image: img-{name}:{tag}\n{pad}{pad}restart: always\n"
        for name, tag in services)
    name, old = services[pick % len(services)]
    change = switch_image_tag(text, service=name, image=f"img-{name}", new_tag=new_tag)
    assert change.old_tag == old
    assert find_image_line(change.text, service=name, image=f"img-{name}").tag == new_tag
    for other, tag in services:
        if other != name:
            assert find_image_line(change.text, service=other, image=f"img-{other}").tag == tag
    assert len(change.text.splitlines()) == len(text.splitlines())
