"""What rollbot saw running, and the deploy hook's rule for CI's ``previous_version``.

Every read of the compose containers through a host session records the service's running tag
(pre-flights, the steps of a run, the watch after a deploy, ``versions``). CI's deploy hook names
the version to roll back to; rollbot accepts it only when it is lower than the new version and is
what rollbot last saw running or last saw deployed there, so a wrong or forged value cannot aim an
automatic rollback at an arbitrary old release.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from bot.autorollback.deploys import DeployStore
from bot.config import ComposeConfig, EnvironmentConfig
from bot.edges.host_facts import running_tag
from bot.model import ContainerState, ImageTag
from bot.ports import DockerFacts
from bot.versions import try_parse_version

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sighting:
    environment: str
    version: str
    last_seen: datetime
    seen_by: str


class Sightings:
    """The ``version_sightings`` table: one row per environment and version, newest sighting."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def record(self, *, environment: str, version: str, seen_by: str) -> None:
        await self._pool.execute(
            "INSERT INTO version_sightings (environment, version, seen_by) VALUES ($1, $2, $3)"
            " ON CONFLICT (environment, version) DO UPDATE SET last_seen = now(),"
            " seen_by = EXCLUDED.seen_by", environment, version, seen_by)

    async def last_running(self, environment: str, *, other_than: str = "") -> Sighting | None:
        """The version last seen running, ignoring ``other_than`` (the deploy being judged)."""
        row = await self._pool.fetchrow(
            "SELECT * FROM version_sightings WHERE environment = $1 AND version <> $2"
            " ORDER BY last_seen DESC LIMIT 1", environment, other_than)
        return Sighting(row["environment"], row["version"], row["last_seen"],
                        row["seen_by"]) if row else None


class RecordingDocker:
    """A ``DockerFacts`` that remembers the service's running tag whenever it reads containers."""

    def __init__(self, inner: DockerFacts, *, sightings: Sightings, environment: str,
                 env: EnvironmentConfig, actor: str) -> None:
        self._inner = inner
        self._sightings = sightings
        self._environment = environment
        self._env = env
        self._actor = actor

    @property
    def via(self) -> str:
        return self._inner.via

    async def image_tags(self, repository: str) -> list[ImageTag]:
        return await self._inner.image_tags(repository)

    async def compose_containers(self, compose: ComposeConfig) -> list[ContainerState]:
        containers = await self._inner.compose_containers(compose)
        tag = running_tag(containers, self._env)
        if compose == self._env.compose and tag is not None:
            try:
                await self._sightings.record(environment=self._environment, version=tag,
                                             seen_by=self._actor)
            except Exception as exc:  # remembering must never stop a rollback or a watch
                log.warning("could not record that %s runs %s: %s", self._environment, tag, exc)
        return containers


@dataclass(frozen=True)
class PreviousVersionVerdict:
    """Whether CI's ``previous_version`` is accepted, and the sentence that says why."""

    accepted: bool
    reason: str


def judge_previous_version(*, environment: str, version: str, previous: str,
                           last_running: str | None, last_deployed: str | None
                           ) -> PreviousVersionVerdict:
    """The rule, pure: lower than ``version``, and what rollbot last saw running or deployed."""
    new, old = try_parse_version(version), try_parse_version(previous)
    if new is None or old is None or not old < new:
        return PreviousVersionVerdict(False, (
            f"previous_version {previous} is not lower than version {version}; rollbot only "
            f"rolls back to an older release. Nothing was recorded or rolled back."))
    known = [v for v in (last_running, last_deployed) if v]
    if not known:
        # First contact: refusing would break the first deploy after rollbot is installed, and
        # the rollback still has its pre-flight (image present, lower version) and a card.
        return PreviousVersionVerdict(True, (
            f"rollbot has not seen {environment} run or deploy anything yet, so "
            f"previous_version {previous} is taken on CI's word"))
    if previous in known:
        how = "last saw running" if previous == last_running else "last saw deployed"
        return PreviousVersionVerdict(True, f"previous_version {previous} is what rollbot {how}"
                                            f" in {environment}")
    saw = []
    if last_running:
        saw.append(f"last saw {last_running} running")
    if last_deployed:
        saw.append(f"last saw {last_deployed} deployed")
    return PreviousVersionVerdict(False, (
        f"previous_version {previous} is not what ran before {version} in {environment}: "
        f"rollbot {' and '.join(saw)}. Send the version that ran before this deploy. Nothing "
        f"was recorded or rolled back."))


async def check_previous_version(*, sightings: Sightings, deploys: DeployStore,
                                 environment: str, version: str, previous: str
                                 ) -> PreviousVersionVerdict:
    """Judge CI's ``previous_version`` against what rollbot remembers of the environment."""
    running = await sightings.last_running(environment, other_than=version)
    deployed = await deploys.last_deployed(environment, other_than=version)
    return judge_previous_version(environment=environment, version=version, previous=previous,
                                  last_running=running.version if running else None,
                                  last_deployed=deployed)
