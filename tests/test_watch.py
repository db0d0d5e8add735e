"""The spec's automatic-rollback triggers, decided from what the watch observed."""

from bot.watch import Observation, triggers_of


def obs(i: int, health: int | None = 200, version: str = "v1.2.3", fives: int = 0,
        bad: tuple[str, ...] = ()) -> Observation:
    return Observation(index=i, health=health, version=version, answers_5xx=fives, answers=3,
                       containers_bad=bad)


def test_a_healthy_deploy_triggers_nothing() -> None:
    seen = [obs(i) for i in range(5)]
    assert triggers_of(seen, max_5xx_ratio=0.2, checks=5, final=True, deployed="v1.2.3") == []


def test_three_failed_health_checks_in_a_row() -> None:
    seen = [obs(0), obs(1, 404), obs(2, 404)]
    assert triggers_of(seen, max_5xx_ratio=1, checks=5, final=False) == []
    seen.append(obs(3, None))
    [trigger] = triggers_of(seen, max_5xx_ratio=1, checks=5, final=False)
    assert trigger == "health checks fail: 3 in a row (last answer none)"


def test_fewer_checks_than_three_need_them_all() -> None:
    [trigger] = triggers_of([obs(0, 500), obs(1, 500)], max_5xx_ratio=1, checks=2, final=True)
    assert trigger.startswith("health checks fail: 2 in a row")


def test_image_fails_to_start_fires_at_once() -> None:
    [trigger] = triggers_of([obs(0, bad=("api: Exited (1)",))], max_5xx_ratio=1, checks=5,
                            final=False)
    assert trigger == "image fails to start: api: Exited (1)"


def test_too_many_5xx_answers_over_the_window() -> None:
    seen = [obs(0, fives=1), obs(1, fives=1), obs(2)]
    assert triggers_of(seen, max_5xx_ratio=0.2, checks=3, final=False) == []
    [trigger] = triggers_of(seen, max_5xx_ratio=0.2, checks=3, final=True)
    assert trigger == "services return 500 errors: 22% of answers were 5xx (limit 20%)"


def test_a_service_that_keeps_reporting_another_version() -> None:
    seen = [obs(i, version="v1.2.2") for i in range(3)]
    [trigger] = triggers_of(seen, max_5xx_ratio=1, checks=5, final=False, deployed="v1.2.3")
    assert trigger == "the service reports v1.2.2, not the deployed v1.2.3, 3 checks in a row"
