"""CI's previous_version is accepted only when it is older and is what rollbot saw before."""

import pytest

from bot.autorollback.deploys import DeployState, DeployStore
from bot.autorollback.sightings import Sightings, check_previous_version, judge_previous_version
from bot.preflight import current_version, unfinished_deploy
from bot.store.runs import Store


def judge(previous: str, *, version: str = "v1.2.3", running: str | None = "v1.2.2",
          deployed: str | None = None) -> tuple[bool, str]:
    verdict = judge_previous_version(environment="production", version=version,
                                     previous=previous, last_running=running,
                                     last_deployed=deployed)
    return verdict.accepted, verdict.reason


def test_the_version_rollbot_last_saw_running_is_accepted() -> None:
    assert judge("v1.2.2") == (True, "previous_version v1.2.2 is what rollbot last saw running "
                                     "in production")


def test_the_version_ci_last_reported_deployed_is_accepted() -> None:
    ok, reason = judge("v1.2.2", running="v1.2.1", deployed="v1.2.2")
    assert ok and "last saw deployed" in reason


@pytest.mark.parametrize("previous", ["v1.2.3", "v1.2.4", "v2.0.0"])
def test_a_previous_version_that_is_not_older_is_refused(previous: str) -> None:
    ok, reason = judge(previous, running=previous)
    assert not ok
    assert reason.startswith(f"previous_version {previous} is not lower than version v1.2.3")
    assert "Nothing was recorded or rolled back." in reason


def test_an_older_version_rollbot_never_saw_before_this_deploy_is_refused() -> None:
    ok, reason = judge("v1.0.0", running="v1.2.2", deployed="v1.2.1")
    assert not ok
    assert reason == ("previous_version v1.0.0 is not what ran before v1.2.3 in production: "
                      "rollbot last saw v1.2.2 running and last saw v1.2.1 deployed. Send the "
                      "version that ran before this deploy. Nothing was recorded or rolled back.")


def test_an_environment_rollbot_never_saw_takes_ci_at_its_word_and_says_so() -> None:
    ok, reason = judge("v1.2.2", running=None, deployed=None)
    assert ok and "taken on CI's word" in reason
    # ...but never an equal or newer one.
    assert judge("v1.2.3", running=None)[0] is False


@pytest.mark.parametrize(("running", "in_file", "unfinished"), [
    ("v1.2.2", "v1.2.3", True),    # the spec's CI order: tag written, migrations failed
    ("v1.2.3", "v1.2.3", False),
    ("v1.2.3", "v1.2.2", False),   # the file names an older release: not a deploy
    (None, "v1.2.3", False),       # nothing runs: the file is the current version anyway
    ("latest", "v1.2.3", False),
])
def test_an_unfinished_deploy_is_a_higher_release_in_the_file_than_runs(
        running: str | None, in_file: str, unfinished: bool) -> None:
    assert unfinished_deploy(running=running, in_file=in_file) is unfinished


async def test_rollbot_remembers_what_ran_before_the_deploy_being_judged(store: Store) -> None:
    seen, deploys = Sightings(store.pool), DeployStore(store.pool)
    assert await check_previous_version(sightings=seen, deploys=deploys,
                                        environment="production", version="v1.2.3",
                                        previous="v1.2.2") == judge_previous_version(
        environment="production", version="v1.2.3", previous="v1.2.2", last_running=None,
        last_deployed=None)
    await seen.record(environment="production", version="v1.2.1", seen_by="U0ALICE")
    await seen.record(environment="production", version="v1.2.2", seen_by="U0ALICE")
    await seen.record(environment="staging", version="v1.9.0", seen_by="U0ALICE")
    # CI started v1.2.3 and rollbot looked before the hook arrived: v1.2.2 still ran before it
    await seen.record(environment="production", version="v1.2.3", seen_by="rollbot")
    last = await seen.last_running("production", other_than="v1.2.3")
    assert last is not None and last.version == "v1.2.2"
    verdict = await check_previous_version(sightings=seen, deploys=deploys,
                                           environment="production", version="v1.2.3",
                                           previous="v1.2.2")
    assert verdict.accepted
    refused = await check_previous_version(sightings=seen, deploys=deploys,
                                           environment="production", version="v1.2.3",
                                           previous="v1.2.1")
    assert not refused.accepted and "last saw v1.2.2 running" in refused.reason


async def test_a_deploy_that_was_rolled_back_is_not_the_last_deployed(store: Store) -> None:
    deploys = DeployStore(store.pool)
    await deploys.record(environment="production", version="v1.2.2", previous_version="v1.2.1",
                         stage="deployed", commit="", actor="ci", run_url="")
    bad, _ = await deploys.record(environment="production", version="v1.2.3",
                                  previous_version="v1.2.2", stage="deployed", commit="",
                                  actor="ci", run_url="")
    assert await deploys.last_deployed("production", other_than="v1.2.4") == "v1.2.3"
    await deploys.move(bad.id, (DeployState.WATCHING,), DeployState.ROLLED_BACK)
    assert await deploys.last_deployed("production", other_than="v1.2.4") == "v1.2.2"
    await deploys.record(environment="production", version="v1.2.4", previous_version="v1.2.2",
                         stage="migration_failed", commit="", actor="ci", run_url="")
    assert await deploys.last_deployed("production", other_than="v1.2.5") == "v1.2.2"


@pytest.mark.parametrize(("running", "in_file", "current"), [
    ("v1.2.3", "v1.2.3", "v1.2.3"),   # a finished deploy
    (None, "v1.2.3", "v1.2.3"),       # nothing runs: the file says what ran
    ("v1.2.2", "v1.2.3", "v1.2.3"),   # the spec's CI order stopped after writing the tag
    ("v1.2.3", "v1.2.2", "v1.2.3"),   # a file edited back by hand: what runs is what counts
])
def test_a_rollback_starts_from_what_runs_or_from_an_unfinished_deploy(
        running: str | None, in_file: str, current: str) -> None:
    # pre-flight and the look taken once the lock is held must agree on this, or a good run is
    # refused as "production changed"
    assert current_version(running=running, in_file=in_file) == current
