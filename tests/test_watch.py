"""The spec's automatic-rollback triggers, decided from what the watch observed, over its length."""

from dataclasses import replace
from pathlib import Path

import pytest

from bot.autorollback.deploys import Deploy, DeployState
from bot.autorollback.machine import ci_failure
from bot.autorollback.watch import Observation, WatchResult, triggers_of, watch
from bot.config import AutoRollbackConfig, ComposeConfig, load_runbook
from bot.model import ContainerState, ImageTag
from handlers.autorollback import offer_message, watch_message
from slack_emulator.limits import block_kit_problems

ENV = load_runbook(Path(__file__).parent / "data" / "rollbot.example.toml").environments[
    "production"]


def obs(i: int, health: int | None = 200, version: str = "v1.2.3", fives: int = 0,
        bad: tuple[str, ...] = ()) -> Observation:
    return Observation(index=i, health=health, version=version, answers_5xx=fives, answers=3,
                       containers_bad=bad)


def judge(seen: list[Observation], *, ratio: float = 1, window: int = 6, planned: int = 180,
          final: bool = False, deployed: str = "") -> list[str]:
    return triggers_of(seen, max_5xx_ratio=ratio, window_checks=window, planned_checks=planned,
                       final=final, deployed=deployed)


def test_a_healthy_deploy_triggers_nothing() -> None:
    seen = [obs(i) for i in range(5)]
    assert judge(seen, ratio=0.2, planned=5, final=True, deployed="v1.2.3") == []


def test_three_failed_health_checks_in_a_row() -> None:
    seen = [obs(0), obs(1, 404), obs(2, 404)]
    assert judge(seen) == []
    seen.append(obs(3, None))
    [trigger] = judge(seen)
    assert trigger == "health checks fail: 3 in a row (last answer none)"


def test_fewer_checks_than_three_need_them_all() -> None:
    [trigger] = judge([obs(0, 503), obs(1, 503)], planned=2, final=True)
    assert trigger.startswith("health checks fail: 2 in a row")


def test_image_fails_to_start_fires_at_once() -> None:
    [trigger] = judge([obs(0, bad=("api: Exited (1)",))])
    assert trigger == "image fails to start: api: Exited (1)"


def test_5xx_are_judged_once_the_window_is_full_not_only_at_the_end() -> None:
    seen = [obs(0, fives=1), obs(1, fives=1), obs(2)]
    assert judge(seen, ratio=0.2, window=3, planned=180) == ["services return 500 errors: 22% "
                                                             "of answers were 5xx over the last"
                                                             " 3 checks (limit 20%)"]
    # A window not yet full is not judged: one early bad answer is not 33% of the watch.
    assert judge(seen[:1], ratio=0.2, window=3, planned=180) == []


def test_the_5xx_window_slides_an_early_blip_is_forgotten_a_late_burst_is_seen() -> None:
    seen = [obs(0, fives=2), obs(1, fives=2)] + [obs(i) for i in range(2, 10)]
    assert judge(seen, ratio=0.2, window=4) == []   # the blip left the window
    seen += [obs(10, fives=2), obs(11, fives=1)]
    [trigger] = judge(seen, ratio=0.2, window=4)
    assert "25% of answers were 5xx over the last 4 checks" in trigger


def test_a_watch_shorter_than_the_window_is_judged_at_its_end() -> None:
    seen = [obs(0, fives=1), obs(1)]
    assert judge(seen, ratio=0.1, window=6, planned=2) == []
    assert judge(seen, ratio=0.1, window=6, planned=2, final=True) != []


def test_a_service_that_keeps_reporting_another_version() -> None:
    seen = [obs(i, version="v1.2.2") for i in range(3)]
    [trigger] = judge(seen, deployed="v1.2.3")
    assert trigger == "the service reports v1.2.2, not the deployed v1.2.3, 3 checks in a row"


@pytest.mark.parametrize(("minutes", "interval", "checks"), [
    (30, 10, 181), (0.015, 0.3, 4), (1, 60, 2), (0.001, 10, 1)])
def test_the_watch_lasts_watch_minutes_a_look_every_interval(minutes: float, interval: float,
                                                             checks: int) -> None:
    cfg = AutoRollbackConfig(watch_minutes=minutes, interval_seconds=interval)
    assert cfg.planned_checks == checks


def test_the_older_checks_key_still_counts_checks() -> None:
    assert AutoRollbackConfig(checks=5, watch_minutes=30).planned_checks == 5


class FakeProbe:
    def __init__(self, health: list[int]) -> None:
        self.health = health
        self.looks = 0

    async def wait_healthy(self, url: str, *, deadline_s: float, interval_s: float) -> object:
        raise AssertionError("the watch does not wait for health")

    async def fetch(self, url: str, *, timeout_s: float) -> tuple[int | None, str]:
        if url == ENV.version_url:
            return 200, '{"version": "v1.2.3"}'
        if url != ENV.health_url:
            return 200, "[]"
        status = self.health[min(self.looks, len(self.health) - 1)]
        self.looks += 1
        return status, ""


class FakeDocker:
    via = "test"

    async def image_tags(self, repository: str) -> list[ImageTag]:
        return []

    async def compose_containers(self, compose: ComposeConfig) -> list[ContainerState]:
        return [ContainerState(name="azora-api-1", service="api", image="azora-api:v1.2.3",
                               state="running", status="Up 1 minute")]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


async def run_watch(health: list[int], **cfg: float) -> tuple[WatchResult, FakeClock, int]:
    env = ENV.model_copy(update={"auto_rollback": AutoRollbackConfig(**cfg)})  # type: ignore[arg-type]
    clock = FakeClock()
    shown = 0

    async def seen(_o: Observation, _r: WatchResult) -> None:
        nonlocal shown
        shown += 1
    result = await watch(env=env, probe=FakeProbe(health), docker=FakeDocker(),  # type: ignore[arg-type]
                         deployed="v1.2.3", on_observation=seen, sleep=clock.sleep, clock=clock)
    return result, clock, shown


async def test_a_good_deploy_is_watched_for_the_whole_watch_minutes() -> None:
    result, clock, shown = await run_watch([200], watch_minutes=2, interval_seconds=10)
    assert not result.failed
    assert len(result.observations) == shown == 13
    assert clock.now - 100.0 == pytest.approx(120.0)
    assert {o.running for o in result.observations} == {"v1.2.3"}


async def test_a_failure_late_in_the_watch_is_caught_then_the_watch_stops() -> None:
    result, clock, _ = await run_watch([200] * 20 + [503] * 10, watch_minutes=30,
                                       interval_seconds=10, max_5xx_ratio=0.5)
    assert result.triggers == ["health checks fail: 3 in a row (last answer 503)"]
    assert len(result.observations) == 23
    assert clock.now - 100.0 == pytest.approx(220.0)


def deploy_row() -> Deploy:
    return Deploy(id=1, environment="production", version="v1.2.3", previous_version="v1.2.2",
                  stage="deployed", commit="abc1234", actor="ci-bot", run_url="",
                  state=DeployState.WATCHING, detail="", deadline=None, decided_by=None,
                  front_ref={})


def test_the_watch_message_stays_small_however_long_the_watch() -> None:
    cfg = AutoRollbackConfig()
    short = WatchResult(planned=181, observations=[obs(i) for i in range(20)])
    long = WatchResult(planned=181, observations=[obs(i) for i in range(180)])
    _, few = watch_message(deploy_row(), cfg, short, elapsed_s=190)
    text, many = watch_message(deploy_row(), cfg, long, elapsed_s=1790)
    assert "Watching for 30 min: a check every 10 s" in text
    body = many[1]["text"]["text"]
    assert "Check 180 of 181 · 29 min 50 s elapsed" in body
    assert "5xx over the last 6 checks: 0 of 18 answers" in body
    # Bounded: the same size after 20 checks as after 180, not one line per check.
    assert len(body) - len(few[1]["text"]["text"]) < 10 and len(body) < 400
    assert block_kit_problems(many) == []
    done, _ = watch_message(deploy_row(), cfg, long, elapsed_s=1800, done=True)
    assert done == ("✅ v1.2.3 in production is healthy: 180 checks green over 30 min 00 s. "
                    "Nothing to roll back.")


@pytest.mark.parametrize(("stage", "labels"), [
    ("start_failed", ["Roll back to v1.2.2 now", "Dismiss"]),
    ("migration_failed", ["Roll back with migrations…", "Roll back code only to v1.2.2",
                          "Dismiss"]),
])
def test_an_untrusted_ci_failure_is_offered_as_buttons_without_a_countdown(
        stage: str, labels: list[str]) -> None:
    row = replace(deploy_row(), stage=stage, state=DeployState.OFFERED)
    text, blocks = offer_message(row, [ci_failure(row)])
    assert text == ("⚠️ v1.2.3 in production failed to deploy (CI run by ci-bot). Nothing rolls "
                    "back by itself: choose below.")
    assert [e["text"]["text"] for b in blocks if b["type"] == "actions"
            for e in b["elements"]] == labels
    assert "Rolling back" not in str(blocks) and block_kit_problems(blocks) == []
