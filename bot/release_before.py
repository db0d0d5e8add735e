"""The release before a named one in an environment: what "Roll back this deploy" rolls back to.

The order of preference, most direct evidence first:

1. CI's deploy record of the named version, whatever stage it reached (the signed deploy hook's
   ``previous_version``, which the hook accepted only when lower and what rollbot last saw
   running or deployed there);
2. an earlier rollback of the named version (a run that rolled it back, and to what);
3. what rollbot saw running there (``version_sightings``): the release below the named one seen
   most recently;
4. the image tags on the host: the newest release below the named one.

A candidate counts only when it is lower than the named version, not quarantined and (when the
host's tags could be read) has its image on the host; the sentence that comes with the answer says
which source gave it and which candidates were passed over, and why.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from bot.errors import InvalidInput, RollbotError
from bot.model import RunStatus
from bot.service import Rollbot
from bot.versions import Version, try_parse_version

log = logging.getLogger(__name__)

_AGAIN = "Nothing was posted; use /rollback VERSION to name the target"


class Source(StrEnum):
    DEPLOY_RECORD = "CI's deploy record"
    EARLIER_ROLLBACK = "an earlier rollback"
    SIGHTING = "what rollbot saw running"
    HOST_TAGS = "the image tags on the host"


@dataclass(frozen=True)
class Candidate:
    """A version one source says ran before the named one, and the sentence that says so."""

    version: str
    source: Source
    because: str


@dataclass(frozen=True)
class History:
    """What rollbot's records say about the named version in one environment."""

    deploy_previous: tuple[tuple[str, datetime], ...] = ()  # CI's previous_version, newest first
    rolled_back_to: tuple[tuple[int, str], ...] = ()         # (run id, target), newest first
    sightings: tuple[tuple[str, datetime], ...] = ()         # (version, last seen), newest first
    named_known: bool = False  # deployed, seen running or rolled back there


@dataclass(frozen=True)
class ReleaseBefore:
    environment: str
    named: Version
    target: str
    source: Source
    because: str  # the sentence for the card: where the target came from


def choose_release_before(*, environment: str, image: str, named: Version, history: History,
                          tags: Sequence[str] | None, quarantined: Sequence[str],
                          host_problem: str = "") -> ReleaseBefore:
    """Pure: the first acceptable candidate in the order of preference (InvalidInput: none).

    ``tags`` None: the host's image tags could not be read (``host_problem`` says why).
    """
    if not history.named_known and (tags is None or str(named) not in tags):
        where = (f"no {image}:{named} image on the host" if tags is not None
                 else f"rollbot could not read the host's images ({host_problem})")
        raise InvalidInput(f"{named} is not a release rollbot knows in {environment}: {where}, "
                           f"and rollbot never saw it deployed or running there. {_AGAIN}.")
    passed: list[str] = []
    for c in _candidates(environment=environment, named=named, history=history, tags=tags):
        version = try_parse_version(c.version)
        if version is None or not version < named:
            passed.append(f"{c.version} from {c.source} is not lower than {named}")
        elif c.version in quarantined:
            passed.append(f"{c.version} from {c.source} is quarantined")
        elif tags is not None and c.version not in tags:
            passed.append(f"{c.version} from {c.source} has no image on the host")
        else:
            note = f" (passed over: {'; '.join(dict.fromkeys(passed))})" if passed else ""
            return ReleaseBefore(environment=environment, named=named, target=c.version,
                                 source=c.source, because=c.because + note)
    host = ("no release image below it on the host" if tags is not None
            else f"rollbot could not read the host's images ({host_problem})")
    why = "; ".join(dict.fromkeys(passed)) or f"no lower release in rollbot's records and {host}"
    raise InvalidInput(f"rollbot knows no release before {named} in {environment} to roll back "
                       f"to: {why}. {_AGAIN}.")


def _candidates(*, environment: str, named: Version, history: History,
                tags: Sequence[str] | None) -> list[Candidate]:
    found = [Candidate(v, Source.DEPLOY_RECORD,
                       f"{Source.DEPLOY_RECORD} of {named} ({at:%Y-%m-%d %H:%M} UTC) names {v} "
                       "as the version it replaced")
             for v, at in history.deploy_previous]
    found += [Candidate(v, Source.EARLIER_ROLLBACK, f"run #{run} rolled {named} back to {v}")
              for run, v in history.rolled_back_to]
    lower = [(v, at) for v, at in history.sightings
             if (p := try_parse_version(v)) is not None and p < named]
    found += [Candidate(v, Source.SIGHTING,
                        f"the release below {named} that rollbot last saw running in "
                        f"{environment} ({at:%Y-%m-%d %H:%M} UTC)") for v, at in lower]
    below = sorted((p for t in tags or () if (p := try_parse_version(t)) is not None
                    and p < named), reverse=True)
    found += [Candidate(str(v), Source.HOST_TAGS,
                        f"the newest release image below {named} on the host"
                        + (" that is not quarantined" if i else "")) for i, v in enumerate(below)]
    return found


class ReleaseFinder:
    """Reads the records and the host's image tags, then chooses (``choose_release_before``)."""

    def __init__(self, rollbot: Rollbot) -> None:
        self._rollbot = rollbot

    async def release_before(self, *, environment: str, named: Version, actor: str
                             ) -> ReleaseBefore:
        env_name, env = self._rollbot.environment(environment)
        tags: list[str] | None
        problem = ""
        try:  # read-only, like `versions`; the card's own pre-flight reads the host again
            versions = await self._rollbot.versions(env_name, actor=actor)
            tags = [t.tag for t in versions.tags]
        except RollbotError as exc:
            tags, problem = None, str(exc)
            log.warning("release before %s in %s: host not read: %s", named, env_name, exc)
        quarantined = [q.version for q in await self._rollbot.quarantined(env_name)]
        return choose_release_before(environment=env_name, image=env.image, named=named,
                                     history=await self.history(env_name, named),
                                     tags=tags, quarantined=quarantined, host_problem=problem)

    async def history(self, environment: str, named: Version) -> History:
        """What the deploys, the runs and the sightings say of ``named`` in ``environment``."""
        pool, version = self._rollbot.store.pool, str(named)
        deploys = await pool.fetch(
            "SELECT previous_version, created_at FROM deploys WHERE environment = $1 AND"
            " version = $2 ORDER BY created_at DESC, id DESC LIMIT 5",
            environment, version)
        runs = await pool.fetch(
            "SELECT id, to_version FROM runs WHERE environment = $1 AND from_version = $2 AND"
            " state = $3 AND to_version IS NOT NULL ORDER BY created_at DESC, id DESC LIMIT 5",
            environment, version, RunStatus.SUCCEEDED.value)
        seen = await pool.fetch(
            "SELECT version, last_seen FROM version_sightings WHERE environment = $1"
            " ORDER BY last_seen DESC", environment)
        known = bool(deploys or runs or any(s["version"] == version for s in seen))
        return History(
            deploy_previous=tuple((r["previous_version"], r["created_at"]) for r in deploys),
            rolled_back_to=tuple((int(r["id"]), str(r["to_version"])) for r in runs),
            sightings=tuple((s["version"], s["last_seen"]) for s in seen),
            named_known=known)
