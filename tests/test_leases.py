"""Leases on deploys: two replicas claim one deploy and one wins; expiry, renewal, release."""

from __future__ import annotations

import asyncio

from bot.autorollback.deploys import Deploy, DeployState, DeployStore
from bot.autorollback.leases import LeaseStore
from bot.store.runs import Store


async def counting_down(store: Store, *, seconds: float = 60) -> Deploy:
    deploys = DeployStore(store.pool)
    deploy, _ = await deploys.record(environment="production", version="v1.2.3",
                                     previous_version="v1.2.2", stage="start_failed",
                                     commit="abc1234", actor="ci-bot", run_url="")
    assert await deploys.move(deploy.id, (DeployState.WATCHING,), DeployState.COUNTDOWN,
                              detail="health checks fail", countdown_s=seconds)
    return deploy


async def test_replicas_claiming_one_unheld_deploy_at_once_one_wins(store: Store) -> None:
    deploy = await counting_down(store)
    replicas = [LeaseStore(store.pool, holder=f"replica-{n}", ttl_s=30) for n in range(6)]
    taken = await asyncio.gather(*(r.take_expired() for r in replicas))
    assert sorted(taken) == [[]] * 5 + [[deploy.id]]
    winner = replicas[[bool(t) for t in taken].index(True)]
    assert await LeaseStore(store.pool, holder="x", ttl_s=1).holder_of(deploy.id) == winner.holder
    # the losers can neither take it nor renew it nor move the deploy; the winner can
    losers = [r for r in replicas if r is not winner]
    assert not any(await asyncio.gather(*(r.take(deploy.id) for r in losers)))
    assert [await r.renew([deploy.id]) for r in losers] == [set()] * 5
    assert await winner.renew([deploy.id]) == {deploy.id}
    deploys = DeployStore(store.pool)
    assert not await deploys.move(deploy.id, (DeployState.COUNTDOWN,), DeployState.ROLLING_BACK,
                                  holder=losers[0].holder)
    assert await deploys.move(deploy.id, (DeployState.COUNTDOWN,), DeployState.ROLLING_BACK,
                              holder=winner.holder)


async def test_an_expired_lease_is_taken_by_another_replica_and_lost_by_its_holder(
    store: Store
) -> None:
    deploy = await counting_down(store)
    dying = LeaseStore(store.pool, holder="dying", ttl_s=0.4)
    other = LeaseStore(store.pool, holder="other", ttl_s=30)
    assert await dying.take(deploy.id)
    assert await other.take_expired() == []          # still live: left alone
    assert not await other.take(deploy.id)
    await asyncio.sleep(0.6)                          # "dying" stopped renewing
    assert await other.take_expired() == [deploy.id]
    assert await dying.renew([deploy.id]) == set()    # it learns it lost the lease
    assert not await DeployStore(store.pool).move(
        deploy.id, (DeployState.COUNTDOWN,), DeployState.ROLLING_BACK, holder="dying")
    assert await other.holder_of(deploy.id) == "other"


async def test_renewing_keeps_a_lease_past_its_expiry_and_releasing_hands_it_over_at_once(
    store: Store
) -> None:
    deploy = await counting_down(store)
    holder = LeaseStore(store.pool, holder="holder", ttl_s=0.5)
    other = LeaseStore(store.pool, holder="other", ttl_s=30)
    assert await holder.take(deploy.id)
    for _ in range(5):                                # 1.25 s: more than twice the lease
        await asyncio.sleep(0.25)
        assert await holder.renew([deploy.id]) == {deploy.id}
        assert await other.take_expired() == []
    await holder.release([deploy.id])
    assert await other.take_expired() == [deploy.id]  # at once, not after the expiry


async def test_only_watches_and_countdowns_are_leased(store: Store) -> None:
    deploy = await counting_down(store)
    deploys = DeployStore(store.pool)
    assert await deploys.move(deploy.id, (DeployState.COUNTDOWN,), DeployState.CANCELLED,
                              by="U0BOB")
    replica = LeaseStore(store.pool, holder="replica", ttl_s=30)
    assert await replica.take_expired() == []
    assert not await replica.take(deploy.id)
