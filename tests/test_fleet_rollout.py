"""A fleet rollout with fake hosts: the canary first and alone, batches, failures, cancel."""

import asyncio
from collections.abc import Sequence
from typing import Any

from bot.config import FleetConfig
from bot.errors import CommandFailed, ConnectionLost
from bot.events import RunEvent, RunStarted, StepFinished, StepStarted
from bot.fleet.lanes import HostPlan, Lane, numbered_infos
from bot.fleet.rollout import FleetRun
from bot.fleet.waves import rollout_sentence, rollout_waves, stops_rollout
from bot.model import ProcedureName, RollbackRequest, RunOutcome, RunStatus, StepStatus
from bot.procedures.base import Procedure, RunFacts, Step, StepAction, StepContext

REQUEST = RollbackRequest(environment="production", procedure=ProcedureName.SIMPLE, target=None,
                          requested_by="alice")
KEYS = ("check_current", "stop_services", "switch_version", "start_services", "wait_healthy")


def test_the_canary_goes_alone_then_batches_of_batch_size() -> None:
    hosts = ["web-1", "web-2", "web-3", "web-4", "web-5"]
    assert rollout_waves(hosts, FleetConfig(canary=1, batch_size=2)) == (
        ("web-1",), ("web-2", "web-3"), ("web-4", "web-5"))
    # default batch_size: all the rest at once
    assert rollout_waves(hosts, FleetConfig(canary=2)) == (
        ("web-1", "web-2"), ("web-3", "web-4", "web-5"))
    assert rollout_waves(hosts, FleetConfig(canary=0, batch_size=3)) == (
        ("web-1", "web-2", "web-3"), ("web-4", "web-5"))
    assert rollout_waves(["web-1"], FleetConfig(canary=1)) == (("web-1",),)


def test_failures_stop_the_rollout_past_max_failed_hosts_and_always_in_a_strict_phase() -> None:
    fleet = FleetConfig(max_failed_hosts=1)
    assert not stops_rollout(failed=0, fleet=fleet, strict=True)
    assert not stops_rollout(failed=1, fleet=fleet, strict=False)
    assert stops_rollout(failed=2, fleet=fleet, strict=False)
    assert stops_rollout(failed=1, fleet=fleet, strict=True)  # the canary, or the database phase


def test_the_plan_says_how_the_steps_apply() -> None:
    waves = rollout_waves(["web-1", "web-2", "web-3"], FleetConfig(canary=1))
    assert rollout_sentence(waves, canary=1, database_host=None) == (
        "on 3 hosts, each through every step: web-1 (canary: alone, and verified before any "
        "other host is touched), then web-2, web-3")
    assert "every host stopped first, the database work once on web-2" in rollout_sentence(
        waves, canary=1, database_host="web-2")


class FakeFleet:
    """Hosts whose steps log when they start and end; some fail, some wait for a signal."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.fail: dict[tuple[str, str], Exception] = {}
        self.hold: dict[tuple[str, str], asyncio.Event] = {}
        self.started: dict[tuple[str, str], asyncio.Event] = {}

    def action(self, host: str, key: str) -> StepAction:
        async def act(ctx: StepContext) -> str:
            self.log.append(f"{host} {key} starts")
            self.started.setdefault((host, key), asyncio.Event()).set()
            if (host, key) in self.hold:
                await self.hold[(host, key)].wait()
            if (host, key) in self.fail:
                raise self.fail[(host, key)]
            self.log.append(f"{host} {key} ends")
            return "done"
        return act

    def lane(self, host: str, keys: Sequence[str] = KEYS, *, stopped_end: int | None = None,
             database_end: int | None = None) -> tuple[HostPlan, StepContext]:
        steps = tuple(Step(key=k, title=k.replace("_", " ").capitalize(),
                           action=self.action(host, k), shows=(), leaves=f"after {k}",
                           timeout_s=5, destructive=k != "check_current") for k in keys)
        procedure = Procedure(name=ProcedureName.SIMPLE, title="t",
                              initial_state="untouched: api still runs v1.2.3", steps=steps,
                              succeeded_state="api runs v1.2.2, healthy")
        plan = HostPlan(host, procedure, steps,
                        len(steps) if stopped_end is None else stopped_end,
                        len(steps) if database_end is None else database_end)
        none: Any = None
        ctx = StepContext(host=none, docker=none, probe=none, env=none, current="v1.2.3",
                          target="v1.2.2", facts=RunFacts(), emit=lambda _l: None)
        return plan, ctx

    def run(self, plans: Sequence[tuple[HostPlan, StepContext]], fleet: FleetConfig, *,
            events: list[RunEvent], database_host: str | None = None) -> FleetRun:
        async def record(e: RunEvent) -> None:
            events.append(e)

        numbered = numbered_infos([p for p, _ in plans])
        lanes = [Lane(plan=p, infos=infos, ctx=ctx, state=p.procedure.initial_state)
                 for (p, ctx), infos in zip(plans, numbered, strict=True)]
        return FleetRun(run_id=9, request=REQUEST, lanes=lanes,
                        waves=rollout_waves([p.name for p, _ in plans], fleet), fleet=fleet,
                        database_host=database_host, checks=(), current="v1.2.3",
                        observers=[record])


def _failed(text: str) -> CommandFailed:
    return CommandFailed(text, exit_status=1, output_tail="")


def _hosts(outcome: RunOutcome) -> dict[str, tuple[RunStatus, bool]]:
    return {h.name: (h.status, h.touched) for h in outcome.hosts}


async def test_the_canary_is_verified_before_any_other_host_is_touched() -> None:
    fake, events = FakeFleet(), []
    run = fake.run([fake.lane(h) for h in ("web-1", "web-2", "web-3")],
                   FleetConfig(canary=1), events=events)
    outcome = await run.execute()
    assert outcome.status is RunStatus.SUCCEEDED
    canary_done = fake.log.index("web-1 wait_healthy ends")
    assert all(not line.startswith(("web-2", "web-3")) for line in fake.log[:canary_done])
    # the batch runs side by side: web-3 starts before web-2 has finished
    assert fake.log.index("web-3 check_current starts") < fake.log.index("web-2 wait_healthy ends")
    started = next(e for e in events if isinstance(e, RunStarted))
    assert started.hosts == ("web-1", "web-2", "web-3")
    assert [i.index for i in started.steps] == list(range(15))
    assert {i.host for i in started.steps} == {"web-1", "web-2", "web-3"}
    assert all(r.host for r in outcome.steps) and len(outcome.steps) == 15
    assert outcome.message.startswith("Rolled back all 3 hosts to v1.2.2.")
    assert "web-1, web-2, web-3: api runs v1.2.2, healthy" in outcome.message


async def test_a_failed_canary_stops_the_rollout_and_the_others_stay_untouched() -> None:
    fake, events = FakeFleet(), []
    fake.fail[("web-1", "wait_healthy")] = _failed("health never came")
    run = fake.run([fake.lane(h) for h in ("web-1", "web-2", "web-3")],
                   FleetConfig(canary=1, max_failed_hosts=5), events=events)
    outcome = await run.execute()
    assert outcome.status is RunStatus.FAILED
    assert not any(line.startswith(("web-2", "web-3")) for line in fake.log)
    assert _hosts(outcome) == {"web-1": (RunStatus.FAILED, True),
                               "web-2": (RunStatus.CANCELLED, False),
                               "web-3": (RunStatus.CANCELLED, False)}
    assert outcome.message.startswith("Rollout stopped: web-1 failed as the canary;")
    assert "web-1: FAILED at 'Wait healthy': health never came." in outcome.message
    assert "web-2, web-3: untouched: api still runs v1.2.3" in outcome.message
    skipped = [r for r in outcome.steps if r.status is StepStatus.SKIPPED]
    assert {r.host for r in skipped} == {"web-2", "web-3"} and len(skipped) == 10


async def test_a_failure_past_max_failed_hosts_lets_the_batch_finish_its_step_only() -> None:
    fake, events = FakeFleet(), []
    # web-2 loses its connection while web-3 is in the middle of stopping its services
    fake.fail[("web-2", "stop_services")] = ConnectionLost("the SSH connection to web-2 dropped")
    fake.hold[("web-2", "stop_services")] = gate = asyncio.Event()
    fake.hold[("web-3", "stop_services")] = asyncio.Event()
    run = fake.run([fake.lane(h) for h in ("web-1", "web-2", "web-3", "web-4")],
                   FleetConfig(canary=1, batch_size=2), events=events)
    task = asyncio.create_task(run.execute())
    while not ({("web-2", "stop_services"), ("web-3", "stop_services")} <= set(fake.started)):
        await asyncio.sleep(0.01)
    gate.set()
    await asyncio.sleep(0.05)
    fake.hold[("web-3", "stop_services")].set()
    outcome = await task
    assert outcome.status is RunStatus.FAILED
    assert "web-3 stop_services ends" in fake.log  # finished the step it was in
    assert "web-3 switch_version starts" not in fake.log  # and started nothing further
    assert not any(line.startswith("web-4") for line in fake.log)
    assert _hosts(outcome) == {"web-1": (RunStatus.SUCCEEDED, True),
                               "web-2": (RunStatus.FAILED, True),
                               "web-3": (RunStatus.CANCELLED, True),
                               "web-4": (RunStatus.CANCELLED, False)}
    assert outcome.message.startswith("Rollout stopped: web-2 failed, more than "
                                      "max_failed_hosts = 0; nothing further was started")
    assert "web-2: FAILED at 'Stop services': the SSH connection to web-2 dropped." in (
        outcome.message)
    assert "web-3: stopped before 'Switch version': after stop_services" in outcome.message
    assert "web-4: untouched: api still runs v1.2.3" in outcome.message
    finished = [e for e in events if isinstance(e, StepFinished) and e.step.host == "web-2"]
    assert finished[-1].result.status is StepStatus.FAILED
    assert finished[-1].host_state.startswith("uncertain: 'Stop services' failed part-way")


async def test_a_tolerated_failure_finishes_the_rollout_but_is_not_a_success() -> None:
    fake, events = FakeFleet(), []
    fake.fail[("web-2", "wait_healthy")] = _failed("unhealthy")
    run = fake.run([fake.lane(h) for h in ("web-1", "web-2", "web-3", "web-4")],
                   FleetConfig(canary=1, batch_size=1, max_failed_hosts=1), events=events)
    outcome = await run.execute()
    assert outcome.status is RunStatus.FAILED
    assert "web-4 wait_healthy ends" in fake.log
    assert outcome.message.startswith("Rolled back 3 of 4 hosts to v1.2.2; web-2 failed "
                                      "(tolerated by max_failed_hosts = 1)")


async def test_cancel_stops_every_lane_before_its_next_step() -> None:
    fake, events = FakeFleet(), []
    fake.hold[("web-2", "switch_version")] = gate = asyncio.Event()
    run = fake.run([fake.lane(h) for h in ("web-1", "web-2", "web-3")],
                   FleetConfig(canary=1), events=events)
    task = asyncio.create_task(run.execute())
    while ("web-2", "switch_version") not in fake.started:
        await asyncio.sleep(0.01)
    run.cancel("bob")
    gate.set()
    outcome = await task
    assert outcome.status is RunStatus.CANCELLED
    assert "web-2 switch_version ends" in fake.log
    assert "web-2 start_services starts" not in fake.log
    assert outcome.message.startswith("Cancelled by bob")
    assert "not offered for a fleet" in outcome.message
    assert _hosts(outcome)["web-1"] == (RunStatus.SUCCEEDED, True)


async def test_database_work_runs_once_with_every_host_stopped_then_canary_then_batch() -> None:
    fake, events = FakeFleet(), []
    host_keys = ("check_current", "stop_services", "switch_version", "start_services")
    db_keys = ("check_current", "stop_services", "migrate_down", "switch_version",
               "start_services")
    plans = [fake.lane("web-1", host_keys, stopped_end=2, database_end=2),
             fake.lane("web-2", db_keys, stopped_end=2, database_end=3),
             fake.lane("web-3", host_keys, stopped_end=2, database_end=2)]
    outcome = await fake.run(plans, FleetConfig(canary=1), events=events,
                             database_host="web-2").execute()
    assert outcome.status is RunStatus.SUCCEEDED
    log = fake.log
    down = log.index("web-2 migrate_down starts")
    assert all(f"{h} stop_services ends" in log[:down] for h in ("web-1", "web-2", "web-3"))
    assert log.count("web-2 migrate_down starts") == 1
    assert all("switch_version" not in line for line in log[:down])
    # then the canary alone, then the batch
    canary_up = log.index("web-1 start_services ends")
    assert not any(("web-2 switch" in ln or "web-3 switch" in ln) for ln in log[:canary_up])
    started = [e for e in events if isinstance(e, StepStarted)]
    assert [e.step.host for e in started if e.step.key == "migrate_down"] == ["web-2"]


async def test_a_host_failing_to_stop_means_no_database_work_at_all() -> None:
    fake, events = FakeFleet(), []
    fake.fail[("web-3", "stop_services")] = _failed("compose down failed")
    host_keys = ("check_current", "stop_services", "switch_version")
    db_keys = ("check_current", "stop_services", "migrate_down", "switch_version")
    plans = [fake.lane("web-1", host_keys, stopped_end=2, database_end=2),
             fake.lane("web-2", db_keys, stopped_end=2, database_end=3),
             fake.lane("web-3", host_keys, stopped_end=2, database_end=2)]
    outcome = await fake.run(plans, FleetConfig(canary=1, max_failed_hosts=2), events=events,
                             database_host="web-2").execute()
    assert outcome.status is RunStatus.FAILED
    assert not any("migrate_down" in ln or "switch_version" in ln for ln in fake.log)
    assert outcome.message.startswith(
        "Rollout stopped: web-3 failed before the database work, which runs only with every "
        "host stopped; nothing further was started on any host.")
    assert "web-1: stopped before 'Switch version': after stop_services" in outcome.message
    assert "web-2: stopped before 'Migrate down': after stop_services" in outcome.message
