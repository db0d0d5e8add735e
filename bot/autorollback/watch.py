"""The watch after a deploy: the spec's automatic-rollback triggers, observed over a window.

Triggers (spec, "Automatic Rollback Triggers"): health checks fail, services return 500 errors,
the image fails to start (containers exited, restarting or unhealthy). Database migrations failing
arrive as their own stage from CI and need no watch.

The watch lasts ``watch_minutes`` (the spec's "monitor for 30 minutes"), one look every
``interval_seconds``; the 5xx ratio is judged on a sliding window of the last ``window_checks``
looks, so a bad minute late in the watch is seen and an early blip is forgotten.

On a fleet each look is every host's (``observe_fleet``), and the triggers are judged per host:
one host answering 5xx is a trigger that names it, however healthy the others are.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace

from bot.config import EnvironmentConfig
from bot.edges.host_facts import running_tag
from bot.ports import DockerFacts, HttpProbe
from bot.versions import reported_version, same_release

CONSECUTIVE_HEALTH_FAILURES = 3


@dataclass(frozen=True)
class Observation:
    """One look at the service during the watch."""

    index: int
    health: int | None
    version: str
    answers_5xx: int
    answers: int
    containers_bad: tuple[str, ...]
    running: str = ""   # the image tag Docker says the service runs ("" when none runs)
    host: str = ""      # the fleet host this look is of ("" for one host, or the whole fleet)
    hosts: tuple[Observation, ...] = ()  # a fleet look: each host's, in the fleet's order

    @property
    def unhealthy(self) -> tuple[str, ...]:
        """The fleet hosts not healthy at this look (() for one host)."""
        return tuple(h.host for h in self.hosts if not h.healthy)

    @property
    def healthy(self) -> bool:
        return self.health is not None and 200 <= self.health < 300


@dataclass
class WatchResult:
    planned: int = 0
    observations: list[Observation] = field(default_factory=list)
    triggers: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.triggers)


@dataclass(frozen=True)
class WindowRatio:
    """5xx answers over the last checks of the sliding window."""

    fives: int
    answers: int
    checks: int

    @property
    def ratio(self) -> float:
        return self.fives / self.answers if self.answers else 0.0


def window_ratio(observations: Sequence[Observation], window_checks: int) -> WindowRatio:
    """The 5xx ratio of the last ``window_checks`` observations."""
    recent = observations[-window_checks:]
    return WindowRatio(fives=sum(o.answers_5xx for o in recent),
                       answers=sum(o.answers for o in recent), checks=len(recent))


@dataclass(frozen=True)
class WatchedHost:
    """One fleet host under watch: its name, its merged settings, its Docker facts."""

    name: str
    env: EnvironmentConfig
    docker: DockerFacts


async def observe_fleet(index: int, *, hosts: Sequence[WatchedHost],
                        probe: HttpProbe) -> Observation:
    """One look at every host at once, summed up; each host's own look kept in ``hosts``."""
    looks = await asyncio.gather(*(observe(index, env=h.env, probe=probe, docker=h.docker)
                                   for h in hosts))
    each = tuple(replace(o, host=h.name) for h, o in zip(hosts, looks, strict=True))
    worst = next((o for o in each if not o.healthy), each[0])
    versions = {o.version for o in each}
    return Observation(
        index=index, health=worst.health,
        version=each[0].version if len(versions) == 1 else ", ".join(
            f"{o.host} {o.version or '?'}" for o in each),
        answers_5xx=sum(o.answers_5xx for o in each), answers=sum(o.answers for o in each),
        containers_bad=tuple(f"{o.host}: {c}" for o in each for c in o.containers_bad),
        running=each[0].running if len({o.running for o in each}) == 1 else "", hosts=each)


async def observe(index: int, *, env: EnvironmentConfig, probe: HttpProbe,
                  docker: DockerFacts) -> Observation:
    health, _ = await probe.fetch(env.health_url, timeout_s=5)
    v_status, v_body = await probe.fetch(env.version_url, timeout_s=5)
    statuses = [health, v_status]
    for url in env.smoke_urls:
        statuses.append((await probe.fetch(url, timeout_s=5))[0])
    containers = await docker.compose_containers(env.compose)
    bad = tuple(f"{c.service}: {c.status or c.state}" for c in containers
                if c.state in ("exited", "restarting", "dead") or "unhealthy" in c.status)
    version = reported_version(v_body, env.version_json_key) if v_status == 200 else ""
    return Observation(index=index, health=health, version=version,
                       answers_5xx=sum(1 for s in statuses if s is not None and s >= 500),
                       answers=len(statuses), containers_bad=bad,
                       running=running_tag(containers, env) or "")


def triggers_of(observations: Sequence[Observation], *, max_5xx_ratio: float,
                window_checks: int, planned_checks: int, final: bool,
                deployed: str = "") -> list[str]:
    """What the spec's triggers say about the observations so far.

    A fleet's looks are judged host by host (a bad host is not averaged away by good ones),
    and each trigger names its host: "web-2: services return 500 errors: …".
    """
    if observations[-1].hosts:
        return [f"{name}: {trigger}"
                for n, name in enumerate(h.host for h in observations[-1].hosts)
                for trigger in triggers_of(
                    [o.hosts[n] for o in observations], max_5xx_ratio=max_5xx_ratio,
                    window_checks=window_checks, planned_checks=planned_checks, final=final,
                    deployed=deployed)]
    found: list[str] = []
    last = observations[-1]
    if last.containers_bad:
        found.append("image fails to start: " + ", ".join(last.containers_bad))
    need = min(CONSECUTIVE_HEALTH_FAILURES, planned_checks)
    streak = observations[-need:]
    if len(streak) == need and not any(o.healthy for o in streak):
        found.append(f"health checks fail: {need} in a row "
                     f"(last answer {streak[-1].health or 'none'})")
    wrong = [o.version for o in streak if o.version and deployed
             and not same_release(o.version, deployed)]
    if len(streak) == need and len(wrong) == need:
        found.append(f"the service reports {wrong[-1]}, not the deployed {deployed}, "
                     f"{need} checks in a row")
    # Judged once the window is full (fewer answers would make one bad answer a high ratio),
    # and at the end of a watch shorter than the window.
    window = window_ratio(observations, window_checks)
    if (window.checks >= window_checks or final) and window.ratio > max_5xx_ratio:
        found.append(f"services return 500 errors: {window.ratio:.0%} of answers were 5xx "
                     f"over the last {window.checks} checks (limit {max_5xx_ratio:.0%})")
    return found


async def watch(*, env: EnvironmentConfig, probe: HttpProbe, docker: DockerFacts | None,
                deployed: str,
                on_observation: Callable[[Observation, WatchResult], Awaitable[None]],
                fleet: Sequence[WatchedHost] = (),
                cancelled: Callable[[], bool] = lambda: False, checks: int | None = None,
                sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                clock: Callable[[], float] = time.monotonic) -> WatchResult:
    """Look every ``interval_seconds`` for ``watch_minutes``; stop early when a trigger fires.

    One host: ``docker``. A fleet: ``fleet``, every host looked at in each look. ``checks``:
    the looks left of a watch another replica began (default: the whole watch).
    """
    config = env.auto_rollback
    result = WatchResult(planned=checks or config.planned_checks)
    started = clock()
    for i in range(result.planned):
        if i:
            # On a fixed cadence: a slow look does not stretch the watch.
            await sleep(max(0.0, started + i * config.interval_seconds - clock()))
        if cancelled():
            break
        if fleet:
            obs = await observe_fleet(i, hosts=fleet, probe=probe)
        else:
            assert docker is not None, "one host is watched through its Docker facts"
            obs = await observe(i, env=env, probe=probe, docker=docker)
        result.observations.append(obs)
        result.triggers = triggers_of(result.observations, max_5xx_ratio=config.max_5xx_ratio,
                                      window_checks=config.window_checks,
                                      planned_checks=result.planned,
                                      final=i == result.planned - 1, deployed=deployed)
        await on_observation(obs, result)
        if result.triggers:
            break
    return result
