"""The watch after a deploy: the spec's automatic-rollback triggers, observed over a window.

Triggers (spec, "Automatic Rollback Triggers"): health checks fail, services return 500 errors,
the image fails to start (containers exited, restarting or unhealthy). Database migrations failing
arrive as their own stage from CI and need no watch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bot.config import EnvironmentConfig
from bot.ports import DockerFacts, HttpProbe
from bot.procedures import reported_version

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

    @property
    def healthy(self) -> bool:
        return self.health is not None and 200 <= self.health < 300


@dataclass
class WatchResult:
    observations: list[Observation] = field(default_factory=list)
    triggers: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.triggers)


async def observe(index: int, *, env: EnvironmentConfig, probe: HttpProbe,
                  docker: DockerFacts) -> Observation:
    health, _ = await probe.fetch(env.health_url, timeout_s=5)
    v_status, v_body = await probe.fetch(env.version_url, timeout_s=5)
    statuses = [health, v_status]
    for url in env.smoke_urls:
        statuses.append((await probe.fetch(url, timeout_s=5))[0])
    containers = await docker.compose_containers(env.compose.project_name)
    bad = tuple(f"{c.service}: {c.status or c.state}" for c in containers
                if c.state in ("exited", "restarting", "dead") or "unhealthy" in c.status)
    return Observation(index=index, health=health,
                       version=reported_version(v_body) if v_status == 200 else "",
                       answers_5xx=sum(1 for s in statuses if s is not None and s >= 500),
                       answers=len(statuses), containers_bad=bad)


def triggers_of(observations: list[Observation], *, max_5xx_ratio: float, checks: int,
                final: bool, deployed: str = "") -> list[str]:
    """What the spec's triggers say about the observations so far."""
    found: list[str] = []
    last = observations[-1]
    if last.containers_bad:
        found.append("image fails to start: " + ", ".join(last.containers_bad))
    need = min(CONSECUTIVE_HEALTH_FAILURES, checks)
    streak = observations[-need:]
    if len(streak) == need and not any(o.healthy for o in streak):
        found.append(f"health checks fail: {need} in a row "
                     f"(last answer {streak[-1].health or 'none'})")
    wrong = [o.version for o in streak if o.version and deployed and o.version != deployed]
    if len(streak) == need and len(wrong) == need:
        found.append(f"the service reports {wrong[-1]}, not the deployed {deployed}, "
                     f"{need} checks in a row")
    answers = sum(o.answers for o in observations)
    ratio = sum(o.answers_5xx for o in observations) / answers if answers else 0.0
    if final and ratio > max_5xx_ratio:
        found.append(f"services return 500 errors: {ratio:.0%} of answers were 5xx "
                     f"(limit {max_5xx_ratio:.0%})")
    return found


async def watch(*, env: EnvironmentConfig, probe: HttpProbe, docker: DockerFacts, deployed: str,
                on_observation: Callable[[Observation], Awaitable[None]],
                cancelled: Callable[[], bool] = lambda: False,
                sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> WatchResult:
    """Look ``checks`` times, ``interval_seconds`` apart; stop early when a trigger fires."""
    config = env.auto_rollback
    result = WatchResult()
    for i in range(config.checks):
        if i:
            await sleep(config.interval_seconds)
        if cancelled():
            break
        obs = await observe(i, env=env, probe=probe, docker=docker)
        result.observations.append(obs)
        await on_observation(obs)
        final = i == config.checks - 1
        result.triggers = triggers_of(result.observations, max_5xx_ratio=config.max_5xx_ratio,
                                      checks=config.checks, final=final, deployed=deployed)
        if result.triggers:
            break
    return result
