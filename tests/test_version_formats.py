"""Version endpoint formats: every way an endpoint reports a release, compared with a tag."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.autorollback.watch import Observation, triggers_of
from bot.config import ComposeConfig, load_runbook
from bot.model import (
    CommandResult,
    ContainerState,
    ProcedureName,
    RunRecord,
    RunStatus,
    Tier,
    VerificationItem,
)
from bot.post_rollback.verification import run_tier
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


class Answers:
    """The service as the Immediate check sees it: the api runs v1.2.2, /version says ``body``."""

    via = "test"

    def __init__(self, body: str) -> None:
        self.body = body

    async def fetch(self, url: str, *, timeout_s: float) -> tuple[int | None, str]:
        return 200, self.body if url == ENV.version_url else "ok"

    async def wait_healthy(self, url: str, *, deadline_s: float, interval_s: float) -> Any:
        raise AssertionError("not used")

    async def image_tags(self, repository: str) -> list[Any]:
        return []

    async def compose_containers(self, compose: ComposeConfig) -> list[ContainerState]:
        return [ContainerState(name="azora_api_1", service="api", image="azora-api:v1.2.2",
                               state="running", status="Up 1 minute")]

    name = "prod"

    async def run(self, command: str, **kw: Any) -> CommandResult:
        return CommandResult(command=command, exit_status=0, output="", truncated=False,
                             duration_s=0.0)


async def immediate_version_item(body: str) -> VerificationItem:
    now = datetime.now(UTC)
    run = RunRecord(id=1, environment="production", procedure=ProcedureName.SIMPLE,
                    status=RunStatus.SUCCEEDED, requested_by="alice", reason="r",
                    from_version="v1.2.3", to_version="v1.2.2", backup=None, created_at=now,
                    finished_at=now, host_state="", message="")
    fake = Answers(body)
    items = await run_tier(tier=Tier.IMMEDIATE, run=run, env=ENV, host=fake,  # type: ignore[arg-type]
                           docker=fake, probe=fake, baseline={}, since=now)  # type: ignore[arg-type]
    return next(i for i in items if i.name == "Version")


@pytest.mark.parametrize(("body", "_shown"), SAME[:-1])
async def test_the_immediate_check_accepts_every_format_of_the_release(body: str, _shown: str
                                                                      ) -> None:
    item = await immediate_version_item(body)
    assert item.ok, item.detail


async def test_the_immediate_check_names_both_strings_of_a_real_mismatch() -> None:
    item = await immediate_version_item("v1.2.1+build.3")
    assert not item.ok
    assert "v1.2.1+build.3" in item.detail and "v1.2.2" in item.detail, item.detail
