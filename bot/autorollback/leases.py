"""Leases on deploys: which rollbot replica watches a deploy or counts it down, and takeovers.

A deploy in ``watching`` or ``countdown`` is worked on by the replica that holds its lease
(``lease_holder``, ``lease_until``; migration 0015). The holder renews its leases every
``renew_s``; every replica also takes the leases that expired (their holder died) with one
conditional UPDATE, so exactly one replica wins each, and carries the work on. A replica that
stops hands its leases over at once (released: another takes them at its next poll), and one
that lost a lease (it stalled past the expiry and another took it) stops that work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

_LEASED_STATES = ["watching", "countdown"]


def holder_id() -> str:
    """This process's name as a lease holder: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass(frozen=True)
class LeaseTimes:
    """How long a lease lasts unrenewed, and how often it is renewed and others' are polled.

    A dead holder's work is taken within ``ttl_s + renew_s`` (12 s by default).
    """

    ttl_s: float = 10.0
    renew_s: float = 2.0


class LeaseStore:
    """The lease SQL: take, renew, release, and take the expired ones; all conditional."""

    def __init__(self, pool: asyncpg.Pool, *, holder: str, ttl_s: float) -> None:
        self._pool = pool
        self.holder = holder
        self._ttl_s = ttl_s

    async def take(self, deploy_id: int) -> bool:
        """Take the lease of a deploy nobody holds (or this holder holds); True when taken."""
        return bool(await self._pool.fetchval(
            "UPDATE deploys SET lease_holder = $2,"
            " lease_until = now() + make_interval(secs => $3::float8)"
            " WHERE id = $1 AND state = ANY($4::text[])"
            " AND (lease_until IS NULL OR lease_until < now() OR lease_holder = $2)"
            " RETURNING true", deploy_id, self.holder, self._ttl_s, _LEASED_STATES))

    async def renew(self, deploy_ids: list[int]) -> set[int]:
        """Push back the expiry of the leases still held; the ids among ``deploy_ids`` kept."""
        if not deploy_ids:
            return set()
        rows = await self._pool.fetch(
            "UPDATE deploys SET lease_until = now() + make_interval(secs => $3::float8)"
            " WHERE id = ANY($1::bigint[]) AND lease_holder = $2 AND lease_until IS NOT NULL"
            " RETURNING id", deploy_ids, self.holder, self._ttl_s)
        return {int(r["id"]) for r in rows}

    async def release(self, deploy_ids: list[int]) -> None:
        """Give the leases up now: another replica may take them at once."""
        if deploy_ids:
            await self._pool.execute(
                "UPDATE deploys SET lease_until = NULL WHERE id = ANY($1::bigint[])"
                " AND lease_holder = $2", deploy_ids, self.holder)

    async def take_expired(self, *, limit: int = 20) -> list[int]:
        """Take deploys being watched or counted down whose lease expired or was released."""
        rows = await self._pool.fetch(
            "UPDATE deploys SET lease_holder = $1,"
            " lease_until = now() + make_interval(secs => $2::float8)"
            " WHERE id IN (SELECT id FROM deploys WHERE state = ANY($3::text[])"
            " AND (lease_until IS NULL OR lease_until < now())"
            " ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED)"
            " AND (lease_until IS NULL OR lease_until < now())"
            " RETURNING id", self.holder, self._ttl_s, _LEASED_STATES, limit)
        return sorted(int(r["id"]) for r in rows)

    async def holder_of(self, deploy_id: int) -> str | None:
        """Who holds the deploy's lease now (None when nobody does)."""
        return await self._pool.fetchval(  # type: ignore[no-any-return]
            "SELECT lease_holder FROM deploys WHERE id = $1 AND lease_until > now()",
            deploy_id)


class LeasedWork:
    """The watches and countdowns this replica runs under a lease, and the keeper loop.

    ``on_taken`` carries on a deploy taken from a replica that stopped. The keeper renews this
    replica's leases, stops the work of a lease it lost, and takes expired leases.
    """

    def __init__(self, store: LeaseStore, *, times: LeaseTimes,
                 on_taken: Callable[[int], Coroutine[Any, Any, None]]) -> None:
        self._store = store
        self._times = times
        self._on_taken = on_taken
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._keeper: asyncio.Task[None] | None = None
        self._handed_over = False

    @property
    def holder(self) -> str:
        return self._store.holder

    def holds(self, deploy_id: int) -> bool:
        return deploy_id in self._tasks

    async def claim(self, deploy_id: int, work: Coroutine[Any, Any, None]) -> bool:
        """Run ``work`` under the deploy's lease, if this replica gets it; else drop it."""
        if self._handed_over or not await self._store.take(deploy_id):
            work.close()
            return False
        self._run(deploy_id, work)
        return True

    def start(self) -> None:
        """Start renewing, and taking over the deploys of replicas that stopped."""
        if self._keeper is None and not self._handed_over:
            self._keeper = asyncio.create_task(self._keep())

    async def hand_over(self) -> list[int]:
        """Stop: the work under lease ends here and its leases are released at once.

        Returns the deploys handed over. A rollback already started is not leased work: it
        goes on (the engine's shutdown stops it between steps).
        """
        self._handed_over = True
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        tasks = dict(self._tasks)
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        await self._store.release(list(tasks))  # each task released its own; this is a backstop
        return sorted(tasks)

    def _run(self, deploy_id: int, work: Coroutine[Any, Any, None]) -> None:
        async def leased() -> None:
            try:
                await work
            except asyncio.CancelledError:
                log.info("deploy #%s: stopped its watch or countdown here (lease handed over "
                         "or lost)", deploy_id)
            except Exception:
                log.exception("deploy #%s: the watch or countdown failed", deploy_id)
            finally:
                self._tasks.pop(deploy_id, None)
                try:
                    await self._store.release([deploy_id])
                except Exception as exc:  # it expires by itself
                    log.warning("deploy #%s: could not release its lease: %s", deploy_id, exc)
        self._tasks[deploy_id] = asyncio.create_task(leased())

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self._times.renew_s)
            try:
                await self._renew_and_take()
            except Exception as exc:  # the database is away: the leases expire, others take
                log.warning("could not renew or take deploy leases: %s", exc)

    async def _renew_and_take(self) -> None:
        held = list(self._tasks)
        kept = await self._store.renew(held)
        for lost in set(held) - kept:
            task = self._tasks.get(lost)
            if task is not None:
                log.warning("deploy #%s: another rollbot replica took its lease; stopping "
                            "the watch or countdown here", lost)
                task.cancel()
        for deploy_id in await self._store.take_expired():
            if deploy_id in self._tasks:
                continue  # this replica's own, renewed late: it goes on as it was
            log.warning("deploy #%s: its watch or countdown was left by a rollbot replica "
                        "that stopped; carrying it on here (%s)", deploy_id, self.holder)
            self._run(deploy_id, self._on_taken(deploy_id))

    def tasks(self) -> list[asyncio.Task[None]]:
        """The watches and countdowns running here now."""
        return list(self._tasks.values())

