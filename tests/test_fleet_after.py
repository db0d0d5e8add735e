"""After a fleet rollback and during a fleet deploy's watch, every host is looked at and a bad one
is named: the verification checks, the report's host table and the watch's triggers (fake edges)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bot.autorollback.watch import (
    Observation,
    WatchedHost,
    WatchResult,
    observe_fleet,
    triggers_of,
    watch,
)
from bot.config import AutoRollbackConfig, ComposeConfig, EnvironmentConfig, load_runbook
from bot.model import (
    CommandResult,
    ContainerState,
    ProcedureName,
    RunRecord,
    RunStatus,
    StepResult,
    StepStatus,
    Tier,
    VerificationItem,
    VerificationResult,
)
from bot.post_rollback.fleet_checks import CheckedHost, join_items, run_fleet_tier
from bot.post_rollback.report_markdown import ReportInputs, host_ending, render_report
from bot.post_rollback.verification import run_tier
from handlers.autorollback import watch_message
from tests.test_watch import FakeClock, deploy_row

RUNBOOK = load_runbook(Path(__file__).parent / "data" / "rollbot.example.toml")
ONE = RUNBOOK.environments["production"]
NOW = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)


def fleet_env(*names: str, **extra: Any) -> EnvironmentConfig:
    """The example environment made a fleet: each host on its own port of 10.0.0.1x."""
    data = ONE.model_dump(exclude={"host_envs", "services"})
    data["hosts"] = [{"name": n, "ssh": {"host": f"10.0.0.1{i}"},
                      "health_url": f"http://10.0.0.1{i}:8080/health",
                      "version_url": f"http://10.0.0.1{i}:8080/version",
                      "smoke_urls": [f"http://10.0.0.1{i}:8080/api/users"]}
                     for i, n in enumerate(names, 1)]
    data.update(extra)
    return EnvironmentConfig.model_validate(data)


def run(to: str = "v1.2.2", **changes: Any) -> RunRecord:
    base: dict[str, Any] = dict(
        id=7, environment="production", procedure=ProcedureName.SIMPLE,
        status=RunStatus.SUCCEEDED, requested_by="U0ALICE", reason="500s",
        from_version="v1.2.3", to_version=to, backup=None, created_at=NOW,
        finished_at=NOW + timedelta(seconds=40), host_state="", message="")
    base.update(changes)
    return RunRecord(**base)


class Host:
    """One fake production host: what its URLs answer, what Docker runs, what its logs say."""

    def __init__(self, name: str, *, health: int | None = 200, version: str = "v1.2.2",
                 tag: str = "v1.2.2", logs: str = "", smoke: int = 200,
                 counts: str = "users|5\norders|8") -> None:
        self.name = name
        self.answers = {"health": health, "version": 200, "users": smoke}
        self.body = version
        self.tag = tag
        self.logs = logs
        self.counts = counts
        self.commands: list[str] = []

    async def compose_containers(self, compose: ComposeConfig) -> list[ContainerState]:
        return [ContainerState(name=f"{self.name}-api-1", service="api",
                               image=f"azora-api:{self.tag}", state="running",
                               status="Up 1 minute")]

    async def run(self, command: str, **_: Any) -> CommandResult:
        self.commands.append(command)
        out = self.counts if "count(*)" in command else self.logs
        return CommandResult(command=command, exit_status=0, output=out, truncated=False,
                             duration_s=0.0)


class Probe:
    """The HTTP edge over the fake hosts: a URL's host is found by its 10.0.0.1N address."""

    def __init__(self, env: EnvironmentConfig, hosts: list[Host]) -> None:
        self.by_address = {e.health_url.split("/")[2]: h
                           for (_, e), h in zip(env.members, hosts, strict=True)}

    async def fetch(self, url: str, *, timeout_s: float) -> tuple[int | None, str]:
        host = self.by_address[url.split("/")[2]]
        status = host.answers[url.rsplit("/", 1)[1]]
        return status, host.body if url.endswith("/version") else "ok"

    async def wait_healthy(self, url: str, *, deadline_s: float, interval_s: float) -> Any:
        raise AssertionError("not used")


def checked(env: EnvironmentConfig, hosts: list[Host]) -> list[CheckedHost]:
    return [CheckedHost(name=n, env=e, host=h, docker=h)  # type: ignore[arg-type]
            for (n, e), h in zip(env.members, hosts, strict=True)]


async def fleet_check(env: EnvironmentConfig, hosts: list[Host], tier: Tier = Tier.IMMEDIATE,
                      **kw: Any) -> dict[str, VerificationItem]:
    items = await run_fleet_tier(tier=tier, run=run(), env=env, probe=Probe(env, hosts),  # type: ignore[arg-type]
                                 baseline={"users": 5, "orders": 8}, since=NOW,
                                 **{"hosts": checked(env, hosts), "database": hosts[0], **kw})
    return {i.name: i for i in items}


# --- verification -----------------------------------------------------------------------------

async def test_a_fleet_check_names_the_host_whose_health_fails_and_passes_the_others() -> None:
    env = fleet_env("web-1", "web-2", "web-3")
    hosts = [Host("web-1"), Host("web-2", health=503), Host("web-3")]
    items = await fleet_check(env, hosts)
    health = items["Health"]
    assert not health.ok and health.hosts == ("web-2",)
    assert health.detail == ("web-2: http://10.0.0.12:8080/health → 503 "
                             "(fine on web-1, web-3)")
    assert items["Version"].ok and items["Services Up"].ok and items["Smoke URLs"].ok
    assert items["Version"].detail == "all 3 hosts: reports v1.2.2 (expected v1.2.2)"


async def test_every_host_is_checked_over_its_own_ssh_for_errors_and_version() -> None:
    env = fleet_env("web-1", "web-2")
    hosts = [Host("web-1"), Host("web-2", version="v1.2.3", tag="v1.2.3",
                                 logs="api_1 | 2026-11-29T03:01:00 ERROR payments down")]
    items = await fleet_check(env, hosts)
    assert items["Error logs"].hosts == ("web-2",)
    assert items["Error logs"].detail.startswith("web-2: 1 error line(s) since the rollback")
    assert items["Version"].detail.startswith("web-2: reports v1.2.3 (expected v1.2.2)")
    assert items["Services Up"].detail.startswith("web-2: all 1 services Up; api runs v1.2.3")
    assert all(any("logs" in c for c in h.commands) for h in hosts)


async def test_row_counts_are_counted_once_on_the_database_host() -> None:
    env = fleet_env("web-1", "web-2")
    hosts = [Host("web-1"), Host("web-2")]
    items = await fleet_check(env, hosts, tier=Tier.EXTENDED, database=hosts[1])
    assert items["Row counts"].ok and items["Row counts"].detail == "users 5, orders 8"
    assert [c for c in hosts[0].commands if "count(*)" in c] == []
    assert len([c for c in hosts[1].commands if "count(*)" in c]) == 1
    names = list(items)
    assert names.index("Row counts") == names.index("Error logs") + 1  # the spec's order


async def test_a_host_not_reached_over_ssh_fails_its_ssh_checks_by_name_its_urls_still_checked(
        ) -> None:
    env = fleet_env("web-1", "web-2")
    hosts = [Host("web-1"), Host("web-2")]
    gone = [checked(env, hosts)[0], CheckedHost(name="web-2", env=env.members[1][1], host=None,
                                                docker=None, unreachable="connection refused")]
    items = {i.name: i for i in await run_fleet_tier(
        tier=Tier.IMMEDIATE, run=run(), env=env, hosts=gone, database=hosts[0],  # type: ignore[arg-type]
        probe=Probe(env, hosts), baseline={}, since=NOW)}  # type: ignore[arg-type]
    assert items["Services Up"].hosts == ("web-2",)
    assert "web-2: not reached over SSH: connection refused" in items["Services Up"].detail
    assert items["Health"].ok  # HTTP needs no SSH


async def test_a_database_host_not_reached_fails_the_row_counts_instead_of_skipping_them() -> None:
    env = fleet_env("web-1", "web-2")
    hosts = [Host("web-1"), Host("web-2")]
    items = await fleet_check(env, hosts, tier=Tier.EXTENDED, database=None)
    assert not items["Row counts"].ok
    assert "could not be reached" in items["Row counts"].detail


async def test_one_host_keeps_todays_items_and_texts() -> None:
    host = Host("prod", health=503)
    items = await run_tier(tier=Tier.EXTENDED, run=run(), env=ONE, host=host, docker=host,  # type: ignore[arg-type]
                           probe=OneProbe(host), baseline={"users": 5, "orders": 8}, since=NOW)  # type: ignore[arg-type]
    assert [i.name for i in items] == ["Services Up", "Health", "Version", "Smoke URLs",
                                       "Error logs", "Row counts", "Warnings"]
    health = next(i for i in items if i.name == "Health")
    assert health.detail == f"{ONE.health_url} → 503" and health.hosts == ()


class OneProbe:
    def __init__(self, host: Host) -> None:
        self.host = host

    async def fetch(self, url: str, *, timeout_s: float) -> tuple[int | None, str]:
        if url == ONE.health_url:
            return self.host.answers["health"], "down"
        return 200, self.host.body if url == ONE.version_url else "ok"


def test_joined_items_list_every_failing_host_and_take_the_slowest_time() -> None:
    a = [VerificationItem("Health", False, "h1 → 503", 0.5)]
    b = [VerificationItem("Health", False, "h2 → no answer", 2.0)]
    [item] = join_items(["web-1", "web-2"], [a, b])
    assert item.detail == "web-1: h1 → 503; web-2: h2 → no answer"
    assert item.hosts == ("web-1", "web-2") and item.duration_s == 2.0


# --- the report -------------------------------------------------------------------------------

def step(title: str, host: str, status: StepStatus, *, error: str = "") -> StepResult:
    started = NOW if status is not StepStatus.SKIPPED else None
    return StepResult(key=title.lower(), title=title, status=status, started_at=started,
                      finished_at=started, error=error, host=host)


def test_the_report_lists_each_host_its_ending_version_and_what_the_check_found() -> None:
    steps = (step("Stop services", "web-1", StepStatus.SUCCEEDED),
             step("Check version", "web-1", StepStatus.SUCCEEDED),
             step("Stop services", "web-2", StepStatus.SUCCEEDED),
             step("Wait for health", "web-2", StepStatus.FAILED, error="health 503"),
             step("Stop services", "web-3", StepStatus.SKIPPED))
    record = run(status=RunStatus.FAILED, steps=steps)
    states = ("services STOPPED", "api runs v1.2.2, healthy", "services STOPPED",
              "api runs v1.2.2, unhealthy (503)", "")
    check = VerificationResult(run_id=7, tier=Tier.IMMEDIATE, due_at=NOW, ran_at=NOW,
                               late_s=0, items=(
                                   VerificationItem("Health", False, "web-2: … → 503",
                                                    hosts=("web-2",)),
                                   VerificationItem("Version", True, "all 3 hosts")))
    text = render_report(ReportInputs(run=record, approved_by=(), checks=(),
                                      verifications=(check,), pending_checks=(), row_counts={},
                                      hosts=("web-1", "web-2", "web-3"), step_states=states),
                         generated_at=NOW)
    assert "| web-1 | ✅ rolled back | v1.2.2 | api runs v1.2.2, healthy | ✅ passed " \
           "(Immediate check) |" in text
    assert ('| web-2 | ❌ failed at "Wait for health" | not confirmed | api runs v1.2.2, '
            'unhealthy (503) | ❌ Health (Immediate check) |') in text
    assert "| web-3 | untouched | v1.2.3 | nothing was run on it |" in text
    assert "  - Hosts found bad: web-2 (Health)" in text
    # Each step names the host it ran on.
    assert "| # | Host | Step | Result | Duration | Note |" in text
    assert '| 4 | web-2 | Wait for health | ❌ failed | 0.0 s | health 503 |' in text


def test_a_one_host_report_has_no_host_table() -> None:
    text = render_report(ReportInputs(run=run(), approved_by=(), checks=(), verifications=(),
                                      pending_checks=(), row_counts={}), generated_at=NOW)
    assert "## Hosts" not in text


def test_a_host_stopped_part_way_is_not_called_rolled_back() -> None:
    steps = (step("Stop services", "web-1", StepStatus.SUCCEEDED),
             step("Start services", "web-1", StepStatus.SKIPPED))
    result, version, state = host_ending(run(status=RunStatus.CANCELLED, steps=steps), "web-1",
                                         ("services STOPPED", ""))
    assert (result, version, state) == ('⏹️ stopped after "Stop services"', "not confirmed",
                                        "services STOPPED")


# --- the watch --------------------------------------------------------------------------------

def look(i: int, host: str, *, health: int | None = 200, fives: int = 0,
         version: str = "v1.2.3") -> Observation:
    return Observation(index=i, health=health, version=version, answers_5xx=fives, answers=3,
                       containers_bad=(), host=host)


def fleet_look(i: int, *hosts: Observation) -> Observation:
    return Observation(index=i, health=200, version="v1.2.3", answers_5xx=0, answers=6,
                       containers_bad=(), hosts=hosts)


def test_the_5xx_window_counts_per_host_so_one_bad_host_is_not_averaged_away() -> None:
    # Over the whole fleet 2 of 12 answers are 5xx (17%, under the 20% limit); on web-2 alone
    # it is 2 of 6 (33%): the host crosses the threshold and is named.
    seen = [fleet_look(i, look(i, "web-1"), look(i, "web-2", fives=1)) for i in range(2)]
    assert triggers_of(seen, max_5xx_ratio=0.2, window_checks=2, planned_checks=10,
                       final=False) == ["web-2: services return 500 errors: 33% of answers "
                                        "were 5xx over the last 2 checks (limit 20%)"]


def test_health_and_version_are_judged_per_host() -> None:
    seen = [fleet_look(i, look(i, "web-1"), look(i, "web-2", health=404, version="v1.2.2"))
            for i in range(3)]
    found = triggers_of(seen, max_5xx_ratio=1, window_checks=6, planned_checks=10, final=False,
                        deployed="v1.2.3")
    assert found == ["web-2: health checks fail: 3 in a row (last answer 404)",
                     "web-2: the service reports v1.2.2, not the deployed v1.2.3, "
                     "3 checks in a row"]


async def test_a_fleet_watch_looks_at_every_host_and_stops_naming_the_bad_one() -> None:
    env = fleet_env("web-1", "web-2").model_copy(update={"auto_rollback": AutoRollbackConfig(
        watch_minutes=1, interval_seconds=10, window_checks=2, max_5xx_ratio=0.2)})
    hosts = [Host("web-1", version="v1.2.3", tag="v1.2.3"),
             Host("web-2", health=503, version="v1.2.3", tag="v1.2.3", smoke=503)]
    probe = Probe(env, hosts)
    fleet = [WatchedHost(n, e, h) for (n, e), h in zip(env.members, hosts, strict=True)]  # type: ignore[arg-type]
    clock = FakeClock()
    shown: list[Observation] = []

    async def seen(o: Observation, _r: WatchResult) -> None:
        shown.append(o)
    result = await watch(env=env, probe=probe, docker=None, fleet=fleet, deployed="v1.2.3",  # type: ignore[arg-type]
                         on_observation=seen, sleep=clock.sleep, clock=clock)
    assert len(result.observations) == 2  # the window is full at the second look
    assert result.triggers == ["web-2: services return 500 errors: 67% of answers were 5xx "
                               "over the last 2 checks (limit 20%)"]
    last = shown[-1]
    assert [h.host for h in last.hosts] == ["web-1", "web-2"] and last.unhealthy == ("web-2",)
    assert last.health == 503  # the fleet's look shows the worst answer
    _, blocks = watch_message(deploy_row(), env.auto_rollback, result, elapsed_s=10)
    text = str(blocks)
    assert "health 503 on web-2" in text and "web-2: services return 500 errors" in text


async def test_a_fleet_look_sums_answers_and_names_bad_containers_by_host() -> None:
    env = fleet_env("web-1", "web-2")
    hosts = [Host("web-1", version="v1.2.3"), Host("web-2", version="v1.2.2")]

    class Exited(Host):
        async def compose_containers(self, compose: ComposeConfig) -> list[ContainerState]:
            return [ContainerState(name="x", service="api", image="azora-api:v1.2.3",
                                   state="exited", status="Exited (1)")]
    hosts[1] = Exited("web-2", version="v1.2.2")
    fleet = [WatchedHost(n, e, h) for (n, e), h in zip(env.members, hosts, strict=True)]  # type: ignore[arg-type]
    o = await observe_fleet(0, hosts=fleet, probe=Probe(env, hosts))  # type: ignore[arg-type]
    assert o.answers == 6 and o.containers_bad == ("web-2: api: Exited (1)",)
    assert o.version == "web-1 v1.2.3, web-2 v1.2.2"
    [trigger] = triggers_of([o], max_5xx_ratio=1, window_checks=6, planned_checks=10,
                            final=False)
    assert trigger == "web-2: image fails to start: api: Exited (1)"


def test_observation_of_one_host_has_no_hosts() -> None:
    o = replace(look(0, ""), health=503)
    assert o.hosts == () and o.unhealthy == ()


# --- reaching every host ----------------------------------------------------------------------

def unreachable_second_host(monkeypatch: Any, opened: list[str], closed: list[str]) -> None:
    """web-2's sshd refuses connections; every other host answers."""
    from contextlib import asynccontextmanager

    import bot.edges.reach as reach
    from bot.errors import ConnectionLost

    @asynccontextmanager
    async def fake_session(env_name: str, env: EnvironmentConfig, **_: Any) -> Any:
        if env.ssh.host == "10.0.0.12":
            raise ConnectionLost("cannot connect to prod-user@10.0.0.12:22: connection refused")
        opened.append(env.ssh.host)
        try:
            yield object()
        finally:
            closed.append(env.ssh.host)
    monkeypatch.setattr(reach, "open_session", fake_session)


async def test_every_host_is_reached_at_once_and_one_that_is_not_is_named(monkeypatch: Any
                                                                          ) -> None:
    from bot.edges.reach import open_sessions
    opened: list[str] = []
    closed: list[str] = []
    unreachable_second_host(monkeypatch, opened, closed)
    env = fleet_env("web-1", "web-2", "web-3")
    async with open_sessions("production", env, store=None, actor="t", run_id=1,  # type: ignore[arg-type]
                             strict=False) as reached:
        assert [(r.name, r.session is not None) for r in reached] == [
            ("web-1", True), ("web-2", False), ("web-3", True)]
        assert "connection refused" in reached[1].problem
    assert sorted(closed) == sorted(opened) == ["10.0.0.11", "10.0.0.13"]


async def test_the_watch_needs_every_host_and_says_which_it_cannot_reach(monkeypatch: Any
                                                                         ) -> None:
    from bot.edges.reach import open_sessions
    from bot.errors import HostError
    opened: list[str] = []
    closed: list[str] = []
    unreachable_second_host(monkeypatch, opened, closed)
    env = fleet_env("web-1", "web-2")
    try:
        async with open_sessions("production", env, store=None, actor="t", run_id=None,  # type: ignore[arg-type]
                                 strict=True):
            raise AssertionError("a half-reached fleet must not be watched")
    except HostError as exc:
        assert str(exc).startswith("web-2: cannot connect to prod-user@10.0.0.12:22"), exc
    assert closed == opened == ["10.0.0.11"]  # what was opened is closed again
