"""A verification check across a fleet: every host looked at, the shared database once.

Each host gets the one-host checks (containers, health, version, smoke URLs, its logs over its own
SSH); the items of the same name are then joined into one, which fails when any host fails it and
names the host(s) first ("web-2: http://10.0.0.12:8080/health → 503"). Row counts are about the
shared database, so they are counted once, on the environment's database host.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from bot.config import EnvironmentConfig
from bot.model import RunRecord, Tier, VerificationItem
from bot.ports import DockerFacts, HttpProbe, RemoteHost
from bot.post_rollback.verification import database_checks, host_checks, with_database_checks


@dataclass(frozen=True)
class CheckedHost:
    """One fleet host as a check sees it: its settings and its session (None: not reached)."""

    name: str
    env: EnvironmentConfig
    host: RemoteHost | None
    docker: DockerFacts | None
    unreachable: str = ""


async def run_fleet_tier(*, tier: Tier, run: RunRecord, env: EnvironmentConfig,
                         hosts: Sequence[CheckedHost], database: RemoteHost | None,
                         probe: HttpProbe, baseline: dict[str, int],
                         since: datetime) -> list[VerificationItem]:
    """One tier on every host in parallel, joined per check; the database once."""
    per_host = await asyncio.gather(*(
        host_checks(tier=tier, run=run, env=h.env, host=h.host, docker=h.docker, probe=probe,
                    since=since, unreachable=h.unreachable) for h in hosts))
    joined = join_items([h.name for h in hosts], list(per_host))
    shared: list[VerificationItem] = []
    if database is not None:
        shared = await database_checks(tier=tier, env=env, host=database, baseline=baseline)
    elif tier is not Tier.IMMEDIATE and env.database is not None and env.database.verify_tables:
        shared = [VerificationItem(name="Row counts", ok=False,
                                   detail="the database host could not be reached over SSH")]
    return with_database_checks(joined, shared)


def join_items(names: Sequence[str], per_host: Sequence[Sequence[VerificationItem]]
               ) -> list[VerificationItem]:
    """The same check on every host as one item: failing hosts named first, then the rest."""
    order: list[str] = []
    for items in per_host:
        order.extend(i.name for i in items if i.name not in order)
    joined = []
    for check in order:
        seen = [(n, i) for n, items in zip(names, per_host, strict=True)
                for i in items if i.name == check]
        bad = [(n, i) for n, i in seen if not i.ok]
        good = [n for n, i in seen if i.ok]
        if bad:
            detail = "; ".join(f"{n}: {i.detail}" for n, i in bad)
            if good:
                detail += f" (fine on {', '.join(good)})"
        elif len({i.detail for _, i in seen}) == 1:
            detail = f"all {len(seen)} hosts: {seen[0][1].detail}"
        else:
            detail = "; ".join(f"{n}: {i.detail}" for n, i in seen)
        joined.append(VerificationItem(
            name=check, ok=not bad, detail=detail, hosts=tuple(n for n, _ in bad),
            duration_s=max(i.duration_s for _, i in seen)))  # the hosts are checked at once
    return joined
