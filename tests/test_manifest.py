"""The Slack app manifest a new user pastes into Slack is one Slack accepts, and asks for no more.

Slack cannot be reached from the tests, so the manifest is checked against Slack's own app-manifest
JSON schemas (slackapi/manifest-schema, MIT), vendored in ``tests/data/slack-manifest-schema/``.
"""

from __future__ import annotations

import copy
import json
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource

from handlers.blocks.message_events import MessageEvent

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "deploy" / "slack-app-manifest.yml"
# Vendored with their source and license noted (README.md there): the tests read nothing outside
# the repository.
SCHEMAS = ROOT / "tests" / "data" / "slack-manifest-schema"

EVENTS_PATH = "/slack/events"
EXPECTED_BOT_SCOPES = {
    "commands",
    "chat:write",
    "app_mentions:read",
    "usergroups:read",
    "files:write",
    "users:read",
    "channels:read",
    "groups:read",
    "metadata.message:read",
}


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    loaded = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict), f"{MANIFEST} is not a YAML mapping"
    return loaded


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    """Slack's all-versions manifest schema, its versioned schemas resolved from local files."""
    top = SCHEMAS / "manifest.schema.json"
    if not top.is_file():
        pytest.fail(
            f"Slack's app-manifest schemas are missing: expected {top} and the versioned "
            "manifest.schema.X.Y.Z.json beside it (see that directory's README.md)."
        )

    def retrieve(uri: str) -> Resource[Any]:
        # manifest.schema.json refers to its versioned schemas by GitHub URL; never fetch them.
        local = SCHEMAS / uri.rsplit("/", 1)[-1]
        if not local.is_file():
            raise NoSuchResource(ref=f"{uri} (no local copy at {local})")
        return Resource.from_contents(_read_json(local))

    schema = _read_json(top)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, registry=Registry(retrieve=retrieve))


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _problems(validator: jsonschema.protocols.Validator, doc: dict[str, Any]) -> list[str]:
    """Each schema violation as "path: message"; empty when the manifest is valid."""
    found: list[jsonschema.ValidationError] = []
    for error in validator.iter_errors(doc):
        if error.validator != "oneOf":
            found.append(error)
            continue
        # The top schema is a oneOf with one branch per manifest major version, each an allOf of
        # a version selector (allOf[0]) and that version's schema. Report the errors of the
        # branches whose selector matched, not "major_version: 2 was expected".
        branches: defaultdict[Any, list[jsonschema.ValidationError]] = defaultdict(list)
        for sub in error.context or []:
            branches[sub.relative_schema_path[0]].append(sub)
        selected = [
            sub
            for subs in branches.values()
            if not any(list(s.relative_schema_path)[1:3] == ["allOf", 0] for s in subs)
            for sub in subs
        ]
        if not selected:
            version = doc.get("_metadata", {}).get("major_version")
            return [f"_metadata.major_version: {version!r} is no manifest version Slack knows"]
        found.extend(selected)
    return sorted(f"{'.'.join(map(str, e.absolute_path)) or '<top>'}: {e.message}" for e in found)


def _urls(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in {"url", "request_url", "message_menu_options_url"}:
                yield value
            else:
                yield from _urls(value)
    elif isinstance(node, list):
        for item in node:
            yield from _urls(item)


def test_slack_accepts_the_manifest(
    manifest: dict[str, Any], validator: jsonschema.protocols.Validator
) -> None:
    assert _problems(validator, manifest) == []
    assert manifest["_metadata"]["major_version"] == 1


def test_on_call_types_rollback_and_slack_sends_it_to_rollbot(manifest: dict[str, Any]) -> None:
    (command,) = manifest["features"]["slash_commands"]
    assert command["command"] == "/rollback"
    assert command["should_escape"] is False
    assert manifest["features"]["bot_user"] == {"display_name": "rollbot", "always_online": True}


def test_buttons_and_mentions_reach_rollbot(manifest: dict[str, Any]) -> None:
    settings = manifest["settings"]
    assert settings["interactivity"]["is_enabled"] is True
    assert "app_mention" in settings["event_subscriptions"]["bot_events"]


def test_the_three_metadata_event_types_are_declared(manifest: dict[str, Any]) -> None:
    # The event types rollbot's notices and verification lines carry (handlers/blocks/
    # message_events.py), so that workflows and other apps can subscribe to them.
    subscriptions = manifest["settings"]["event_subscriptions"]["metadata_subscriptions"]
    declared = {s["event_type"] for s in subscriptions}
    assert declared == {"rollback_completed", "rollback_failed", "rollback_verified"}
    assert declared == {e.value for e in MessageEvent}
    assert "metadata.message:read" in manifest["oauth_config"]["scopes"]["bot"]


def test_rollbot_asks_for_exactly_the_scopes_it_uses(manifest: dict[str, Any]) -> None:
    scopes = manifest["oauth_config"]["scopes"]
    assert set(scopes) == {"bot"}, "no user or optional scopes"
    assert len(scopes["bot"]) == len(set(scopes["bot"]))
    assert set(scopes["bot"]) == EXPECTED_BOT_SCOPES


def test_every_request_url_is_rollbots_one_endpoint(manifest: dict[str, Any]) -> None:
    urls = list(_urls(manifest))
    # The slash command, interactivity and the Events API: all three, for HTTP mode.
    assert manifest["settings"]["socket_mode_enabled"] is False
    assert len(urls) == 3
    for url in urls:
        assert url.startswith("https://"), url
        assert url.endswith(EVENTS_PATH), url


def test_background_color_is_a_hex_color(manifest: dict[str, Any]) -> None:
    # The schema spells its pattern "regex", which JSON Schema ignores; check it here.
    color = manifest["display_information"]["background_color"]
    assert re.fullmatch(r"#[0-9a-fA-F]{3}([0-9a-fA-F]{3})?", color), color


def _with_unknown_top_level_key(doc: dict[str, Any]) -> None:
    doc["slash_commands"] = doc["features"]["slash_commands"]


def _with_scopes_as_a_string(doc: dict[str, Any]) -> None:
    doc["oauth_config"]["scopes"]["bot"] = "commands,chat:write"


def _with_a_scope_that_is_not_a_string(doc: dict[str, Any]) -> None:
    doc["oauth_config"]["scopes"]["bot"].insert(0, 42)  # first: whatever scopes follow


def _with_a_command_without_slash(doc: dict[str, Any]) -> None:
    doc["features"]["slash_commands"][0]["command"] = "rollback"


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (_with_unknown_top_level_key, "<top>"),
        (_with_scopes_as_a_string, "oauth_config.scopes.bot"),
        (_with_a_scope_that_is_not_a_string, "oauth_config.scopes.bot.0"),
        (_with_a_command_without_slash, "features.slash_commands.0.command"),
    ],
)
def test_a_broken_manifest_fails_validation(
    manifest: dict[str, Any],
    validator: jsonschema.protocols.Validator,
    mutate: Any,
    where: str,
) -> None:
    broken = copy.deepcopy(manifest)
    mutate(broken)
    problems = _problems(validator, broken)
    assert any(p.startswith(f"{where}: ") for p in problems), problems
