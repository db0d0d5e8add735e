"""The home tab's republishing across replicas: one publish per change, at most every 2 s per
user, only to people who opened the tab within the hour (real PostgreSQL, two refreshers)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from bot.autorollback.deploys import DeployStore
from bot.dashboard import Dashboard, DashboardReader, DashboardRefresher, HomeViewers
from bot.store.runs import Store


class Published:
    """The Slack side of one replica: who it published to, and what they saw."""

    def __init__(self, *, failing: bool = False) -> None:
        self.sent: list[tuple[str, Dashboard]] = []
        self.failing = failing

    async def __call__(self, dashboard: Dashboard, users: Sequence[str]) -> list[str]:
        if self.failing:
            return list(users)
        self.sent += [(u, dashboard) for u in users]
        return []


def replica(store: Store, published: Published) -> DashboardRefresher:
    reader = DashboardReader(store.pool, environments=["production", "staging"],
                             default_environment="production")
    return DashboardRefresher(reader=reader, viewers=HomeViewers(store.pool), publish=published)


async def test_two_replicas_publish_each_change_once_debounced(store: Store) -> None:
    a_sent, b_sent = Published(), Published()
    a, b = replica(store, a_sent), replica(store, b_sent)
    deploys = DeployStore(store.pool)
    await a.opened("U0ALICE")
    assert [u for u, _ in a_sent.sent] == ["U0ALICE"]
    await b.opened("U0ALICE")  # opened again at once: the view is that fresh already
    assert b_sent.sent == []
    await asyncio.sleep(2.4)
    assert await a.refresh_once() == [] and await b.refresh_once() == []  # nothing changed

    await deploys.quarantine(environment="production", version="v1.2.3", by="U0BOB",
                             reason="broke checkout", run_id=None)
    both = await asyncio.gather(a.refresh_once(), b.refresh_once())
    assert sorted(both) == [[], ["U0ALICE"]]  # one replica took it
    shown = (a_sent.sent + b_sent.sent)[-1][1]
    assert [q.version for q in shown.environments[0].quarantined] == ["v1.2.3"]

    await deploys.lift("production", "v1.2.3")  # within 2 s of the last publish: wait
    assert await a.refresh_once() == [] and await b.refresh_once() == []
    await asyncio.sleep(2.4)
    assert await b.refresh_once() == ["U0ALICE"]
    assert len(a_sent.sent) + len(b_sent.sent) == 3


async def test_only_recent_viewers_and_a_failed_publish_is_tried_again(store: Store) -> None:
    failing, working = Published(failing=True), Published()
    down, up = replica(store, failing), replica(store, working)
    await up.opened("U0ALICE")
    await up.opened("U0CAROL")
    await store.pool.execute("UPDATE home_viewers SET opened_at = now() - interval '61 minutes'"
                             " WHERE user_id = 'U0CAROL'")
    await asyncio.sleep(2.4)
    await DeployStore(store.pool).quarantine(environment="staging", version="v2.0.0",
                                             by="U0BOB", reason="x", run_id=None)
    assert await down.refresh_once() == ["U0ALICE"]  # claimed, but Slack did not take it
    await asyncio.sleep(2.4)
    assert await up.refresh_once() == ["U0ALICE"]  # so the next poll publishes it again
    assert [u for u, _ in working.sent] == ["U0ALICE", "U0CAROL", "U0ALICE"]
