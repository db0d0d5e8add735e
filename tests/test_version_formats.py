"""Version endpoint formats: every way an endpoint reports a release, compared with a tag."""

from pathlib import Path

import pytest

from bot.autorollback.watch import Observation, triggers_of
from bot.config import load_runbook
from bot.versions import reported_version, same_release

ENV = load_runbook(Path(__file__).parent / "data" / "rollbot.example.toml").environments[
    "production"]

SAME = [
    ("1.2.2", "1.2.2"),
    ("v1.2.2", "v1.2.2"),
    ('{"version": "v1.2.2"}', "v1.2.2"),
    ('{"version": "1.2.2", "commit": "abc1234"}', "1.2.2"),
    ("v1.2.2+build.7", "v1.2.2+build.7"),
    ("1.2.2+build.7\n", "1.2.2+build.7"),
    ("v1.2.2 (abc1234)", "v1.2.2 (abc1234)"),
    ("v1.2.2+build.7 (abc1234)", "v1.2.2+build.7 (abc1234)"),
    ("v1.3.0-rc.1+build.2", "v1.3.0-rc.1+build.2"),
]


@pytest.mark.parametrize(("body", "shown"), SAME)
def test_every_format_of_the_release_matches_its_tag(body: str, shown: str) -> None:
    seen = reported_version(body)
    assert seen == shown      # a mismatch message shows the string as the endpoint wrote it
    tag = "v1.3.0-rc.1" if "rc" in body else "v1.2.2"
    assert same_release(seen, tag)


@pytest.mark.parametrize("body", [
    "1.2.1", "v1.2.1", '{"version": "v1.2.1"}', "v1.2.1+build.7", "v1.2.1 (abc1234)",
    "v1.2.20", "v1.2", "v1.3.0-rc.1", "", '{"other": "v1.2.2"}', "[]", "null", "abc1234 v1.2.2",
])
def test_another_release_or_no_release_does_not_match(body: str) -> None:
    assert not same_release(reported_version(body), "v1.2.2")


def test_the_json_key_is_configurable() -> None:
    body = '{"app_version": "v1.2.2", "version": "2"}'
    assert reported_version(body, "app_version") == "v1.2.2"
    assert same_release(reported_version(body, "app_version"), "v1.2.2")
    assert not same_release(reported_version(body), "v1.2.2")
    assert reported_version('{"version": 3}') == "3"


def test_version_json_key_defaults_to_version_and_is_read_per_environment(tmp_path: Path) -> None:
    assert ENV.version_json_key == "version"
    text = (Path(__file__).parent / "data" / "rollbot.example.toml").read_text()
    changed = text.replace('version_url = ', 'version_json_key = "build"\nversion_url = ', 1)
    assert changed != text
    path = tmp_path / "rollbot.toml"
    path.write_text(changed)
    assert load_runbook(path).environments["production"].version_json_key == "build"


def _obs(i: int, version: str) -> Observation:
    return Observation(index=i, health=200, version=version, answers_5xx=0, answers=3,
                       containers_bad=())


@pytest.mark.parametrize("reported", ["1.2.3", "v1.2.3+build.9", "v1.2.3 (abc1234)"])
def test_the_watch_counts_decorated_reports_of_the_deployed_release_as_right(reported: str) -> None:
    seen = [_obs(i, reported) for i in range(3)]
    assert triggers_of(seen, max_5xx_ratio=1, window_checks=6, planned_checks=180, final=False,
                       deployed="v1.2.3") == []


def test_the_watch_names_both_strings_of_a_real_mismatch() -> None:
    seen = [_obs(i, "v1.2.2+build.7") for i in range(3)]
    found = triggers_of(seen, max_5xx_ratio=1, window_checks=6, planned_checks=180, final=False,
                        deployed="v1.2.3")
    assert any("v1.2.2+build.7" in f and "v1.2.3" in f for f in found), found
