"""CI's deploy messages, as Slack delivers them to the shortcut: which release, which environment.

Each message is the shape a real CI posts (plain text, mrkdwn with links, Block Kit sections and
rich text, legacy attachments); the shortcut reads all of it and finds the one deployed release.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from bot.errors import InvalidInput
from bot.release_mention import deployed_version, find_release
from handlers.ids import Shortcut
from handlers.message_text import message_text
from tests.test_manifest import MANIFEST

ENVIRONMENTS = ("production", "staging", "hardened")


def release(message: dict[str, Any]) -> tuple[str, str, bool]:
    found = find_release(message_text(message), environments=ENVIRONMENTS,
                         default="production")
    return str(found.version), found.environment, found.environment_named


def rich(*pieces: dict[str, Any]) -> dict[str, Any]:
    return {"type": "rich_text", "elements": [{"type": "rich_text_section",
                                               "elements": list(pieces)}]}


CI_MESSAGES: list[tuple[str, dict[str, Any], tuple[str, str, bool]]] = [
    ("the spec's plain text", {"text": "Deployed v1.2.3 to production"},
     ("v1.2.3", "production", True)),
    ("no environment: the default", {"text": "Deployed v1.2.3"}, ("v1.2.3", "production", False)),
    ("another environment, capitalised", {"text": "Deployed v1.2.3 to Staging"},
     ("v1.2.3", "staging", True)),
    ("image:tag in code", {"text": "Deployed `azora-api:v1.2.3` to *production* :rocket:"},
     ("v1.2.3", "production", True)),
    ("release link, label and URL name the same version",
     {"text": "<https://github.com/azora/api/releases/tag/v1.2.3|v1.2.3> deployed to production"},
     ("v1.2.3", "production", True)),
    ("a compare link names the previous release only in its URL",
     {"text": "Deployed v1.2.3 to production (<https://github.com/azora/api/compare/"
              "v1.2.2...v1.2.3|changes>)"}, ("v1.2.3", "production", True)),
    ("CI says what it replaced", {"text": "Deployed v1.2.3 to production (previous: v1.2.2)"},
     ("v1.2.3", "production", True)),
    ("was", {"text": "production is now on v1.2.3 (was v1.2.2)"},
     ("v1.2.3", "production", True)),
    ("an arrow, escaped as Slack escapes it", {"text": "production: v1.2.2 -&gt; v1.2.3 ✅"},
     ("v1.2.3", "production", True)),
    ("a unicode arrow", {"text": "azora-api v1.2.2 → v1.2.3 on production"},
     ("v1.2.3", "production", True)),
    ("from … to …", {"text": "Upgraded production from v1.2.2 to v1.2.3"},
     ("v1.2.3", "production", True)),
    ("a range", {"text": "Shipped v1.2.2...v1.2.3 to production"},
     ("v1.2.3", "production", True)),
    ("build metadata is not part of the release",
     {"text": "Deploy succeeded: v1.2.3+build.77 (3f2c1a9) → production"},
     ("v1.2.3", "production", True)),
    ("a pre-release", {"text": "Deployed v1.3.0-rc.1 to staging"},
     ("v1.3.0-rc.1", "staging", True)),
    ("no 'v': the release still counts",
     {"text": "Release 1.2.3 deployed to production (build #456)"},
     ("v1.2.3", "production", True)),
    ("an IP address and a date are no release",
     {"text": "Deployed v1.2.3 to production on 10.0.0.11 at 2026.11.29"},
     ("v1.2.3", "production", True)),
    ("empty text, the deploy in Block Kit sections", {
        "text": "", "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "🚀 Deploy finished"}},
            {"type": "section", "fields": [
                {"type": "mrkdwn", "text": "*Environment:*\nproduction"},
                {"type": "mrkdwn", "text": "*Version:*\n`v1.2.3`"}]},
            {"type": "context", "elements": [
                {"type": "mrkdwn", "text": "by <@U0DEPLOYER> · commit abc1234"}]}]},
     ("v1.2.3", "production", True)),
    ("rich text, as Slack stores a pasted message", {
        "text": "Deployed v1.2.3 to hardened", "blocks": [rich(
            {"type": "text", "text": "Deployed "},
            {"type": "text", "text": "v1.2.3", "style": {"code": True}},
            {"type": "text", "text": " to "},
            {"type": "link", "url": "https://grafana.example.com/d/hard",
             "text": "hardened"})]},
     ("v1.2.3", "hardened", True)),
    ("a legacy attachment with fields (the GitHub/Jenkins style)", {
        "text": "", "attachments": [{
            "color": "#36a64f", "fallback": "Deploy azora-api v1.2.3 succeeded",
            "title": "azora-api deploy succeeded",
            "fields": [{"title": "Version", "value": "v1.2.3", "short": True},
                       {"title": "Environment", "value": "staging", "short": True}]}]},
     ("v1.2.3", "staging", True)),
    ("blocks inside an attachment", {
        "text": "Deployment notification", "attachments": [{"blocks": [
            {"type": "section", "text": {"type": "mrkdwn",
                                         "text": "✅ *production* now runs *v1.2.3*"}}]}]},
     ("v1.2.3", "production", True)),
    ("an environment inside a longer word does not count",
     {"text": "Deployed v1.2.3 (azora-staging-db unchanged)"}, ("v1.2.3", "production", False)),
]


@pytest.mark.parametrize(("case", "message", "expected"), CI_MESSAGES,
                         ids=[c[0] for c in CI_MESSAGES])
def test_the_deployed_release_and_environment_of_each_ci_message(
        case: str, message: dict[str, Any], expected: tuple[str, str, bool]) -> None:
    assert release(message) == expected


@pytest.mark.parametrize(("message", "says"), [
    ({"text": "Deploy finished :tada:"}, "names no release version"),
    ({"text": "Deployed main@3f2c1a9 to production"}, "names no release version"),
    ({"text": "Deployed v1.2.3 and v1.2.4 to production"}, "several release versions (v1.2.3, "
                                                             "v1.2.4)"),
    ({"text": "Deployed v1.2.3 to production and staging"}, "more than one environment "
                                                              "(production, staging)"),
    ({"text": "Deployed v1.2.3; rm -rf / to production"}, ""),  # the version alone is taken
])
def test_what_the_shortcut_cannot_read_is_said_plainly(message: dict[str, Any],
                                                        says: str) -> None:
    if not says:
        assert release(message) == ("v1.2.3", "production", True)
        return
    with pytest.raises(InvalidInput) as refused:
        release(message)
    assert says in str(refused.value)
    assert "Nothing was posted" in str(refused.value)


def test_a_version_too_long_to_be_a_release_is_not_one() -> None:
    with pytest.raises(InvalidInput, match="names no release version"):
        deployed_version("Deployed v1234567.0.0")


def test_message_text_reads_every_part_once_and_resolves_links() -> None:
    text = message_text({
        "text": "see <https://ci.example.com/run/9|run 9> &amp; <https://ci.example.com>",
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*v1.2.3*"}}],
        "attachments": [{"fallback": "only when nothing else", "text": "attached"}]})
    assert text.splitlines() == ["see run 9 & https://ci.example.com", "*v1.2.3*", "attached"]


def test_the_manifest_declares_the_message_shortcut_rollbot_listens_for() -> None:
    manifest = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    (shortcut,) = manifest["features"]["shortcuts"]
    assert shortcut == {"name": "Roll back this deploy", "type": "message",
                        "callback_id": Shortcut.ROLLBACK.value,
                        "description": shortcut["description"]}
    assert "commands" in manifest["oauth_config"]["scopes"]["bot"]  # shortcuts need it
