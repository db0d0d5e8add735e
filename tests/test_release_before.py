"""The release before a named one: CI's record, then an earlier rollback, then what rollbot saw
running, then the image tags on the host; each candidate lower, not quarantined, on the host."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

import pytest

from bot.autorollback.deploys import DeployStore
from bot.autorollback.sightings import Sightings
from bot.config import load_runbook
from bot.errors import InvalidInput
from bot.ports import HttpProbe
from bot.release_before import History, ReleaseFinder, Source, choose_release_before
from bot.service import Rollbot
from bot.store.runs import Store
from bot.versions import parse_version
from tests.slack_world import EXAMPLE_RUNBOOK

V123 = parse_version("v1.2.3")
TAGS = ["v1.2.3", "v1.2.2", "v1.2.1", "latest"]
AT = datetime(2026, 11, 28, 14, 5, tzinfo=UTC)
NOTHING = History()


def choose(history: History = NOTHING, *, tags: list[str] | None = TAGS,
           quarantined: tuple[str, ...] = (), problem: str = "") -> tuple[str, Source, str]:
    found = choose_release_before(environment="production", image="azora-api", named=V123,
                                  history=history, tags=tags, quarantined=quarantined,
                                  host_problem=problem)
    return found.target, found.source, found.because


def test_with_no_history_the_newest_lower_image_on_the_host() -> None:
    assert choose() == ("v1.2.2", Source.HOST_TAGS,
                        "the newest release image below v1.2.3 on the host")


def test_cis_deploy_record_comes_first() -> None:
    history = History(deploy_previous=(("v1.2.1", AT),), sightings=(("v1.2.2", AT),),
                      named_known=True)
    target, source, because = choose(history)
    assert (target, source) == ("v1.2.1", Source.DEPLOY_RECORD)
    assert because == ("CI's deploy record of v1.2.3 (2026-11-28 14:05 UTC) names v1.2.1 as the "
                       "version it replaced")


def test_an_earlier_rollback_of_the_same_release_comes_before_sightings() -> None:
    history = History(rolled_back_to=((7, "v1.2.1"),), sightings=(("v1.2.2", AT),),
                      named_known=True)
    assert choose(history)[:2] == ("v1.2.1", Source.EARLIER_ROLLBACK)
    assert choose(history)[2] == "run #7 rolled v1.2.3 back to v1.2.1"


def test_sightings_give_the_lower_release_seen_most_recently() -> None:
    history = History(sightings=(("v1.2.4", AT), ("v1.2.3", AT), ("v1.2.1", AT),
                                 ("v1.2.2", AT)), named_known=True)
    assert choose(history)[:2] == ("v1.2.1", Source.SIGHTING)


def test_a_candidate_is_passed_over_when_quarantined_missing_or_not_lower() -> None:
    history = History(deploy_previous=(("v1.2.4", AT), ("v1.2.0", AT)),
                      rolled_back_to=((3, "v1.2.2"),), named_known=True)
    target, source, because = choose(history, quarantined=("v1.2.2",))
    assert (target, source) == ("v1.2.1", Source.HOST_TAGS)
    assert because.startswith("the newest release image below v1.2.3 on the host that is not "
                              "quarantined (passed over: ")
    assert because.endswith("(passed over: v1.2.4 from CI's deploy record is not lower than "
                            "v1.2.3; v1.2.0 from CI's deploy record has no image on the host; "
                            "v1.2.2 from an earlier rollback is quarantined; v1.2.2 from the "
                            "image tags on the host is quarantined)")


def test_a_version_rollbot_never_met_is_refused() -> None:
    with pytest.raises(InvalidInput) as refused:
        choose_release_before(environment="production", image="azora-api",
                              named=parse_version("v9.9.9"), history=History(), tags=TAGS,
                              quarantined=())
    assert str(refused.value) == (
        "v9.9.9 is not a release rollbot knows in production: no azora-api:v9.9.9 image on the "
        "host, and rollbot never saw it deployed or running there. Nothing was posted; use "
        "/rollback VERSION to name the target.")


def test_the_oldest_release_has_none_before_it() -> None:
    with pytest.raises(InvalidInput) as refused:
        choose_release_before(environment="production", image="azora-api",
                              named=parse_version("v1.2.1"), history=History(), tags=TAGS,
                              quarantined=())
    assert "rollbot knows no release before v1.2.1 in production" in str(refused.value)
    assert "no release image below it on the host" in str(refused.value)


def test_a_host_that_cannot_be_read_leaves_rollbots_records() -> None:
    history = History(deploy_previous=(("v1.2.2", AT),), named_known=True)
    assert choose(history, tags=None, problem="SSH refused")[:2] == ("v1.2.2",
                                                                     Source.DEPLOY_RECORD)
    with pytest.raises(InvalidInput, match="could not read the host's images \\(SSH refused"):
        choose(History(named_known=True), tags=None, problem="SSH refused")
    with pytest.raises(InvalidInput, match="is not a release rollbot knows"):
        choose(History(), tags=None, problem="SSH refused")


async def test_rollbots_records_are_read_per_environment_newest_first(store: Store) -> None:
    deploys, seen = DeployStore(store.pool), Sightings(store.pool)
    await deploys.record(environment="production", version="v1.2.3", previous_version="v1.2.1",
                         stage="migration_failed", commit="a1", actor="ci", run_url="")
    await deploys.record(environment="staging", version="v1.2.3", previous_version="v1.2.0",
                         stage="deployed", commit="a1", actor="ci", run_url="")
    for version in ("v1.2.1", "v1.2.2", "v1.2.3"):
        await seen.record(environment="production", version=version, seen_by="test")
    for state, target in (("succeeded", "v1.2.2"), ("refused", "v1.2.0")):
        await store.pool.execute(
            "INSERT INTO runs (environment, procedure, state, requested_by, from_version,"
            " to_version, owner) VALUES ('production', 'simple', $1, 'U0ALICE', 'v1.2.3', $2,"
            " 'test')", state, target)
    rollbot = Rollbot(runbook=load_runbook(EXAMPLE_RUNBOOK), store=store,
                      probe=cast(HttpProbe, None))
    history = await ReleaseFinder(rollbot).history("production", V123)
    assert [v for v, _ in history.deploy_previous] == ["v1.2.1"]  # a failed deploy counts too
    assert [v for _, v in history.rolled_back_to] == ["v1.2.2"]    # a refused run does not
    assert [v for v, _ in history.sightings] == ["v1.2.3", "v1.2.2", "v1.2.1"]
    assert history.named_known
    assert not (await ReleaseFinder(rollbot).history("production",
                                                     parse_version("v9.9.9"))).named_known
