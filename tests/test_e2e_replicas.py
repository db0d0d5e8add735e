"""Two replicas behind haproxy: Slack reaches either one, and a dead one is routed around."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.store.runs import Store
from tests.replicas import served_by, two_replicas
from tests.sandbox import Sandbox
from tests.slack_world import ALICE, INCIDENTS

pytestmark = pytest.mark.e2e


async def test_slack_reaches_both_replicas_in_turn_and_a_dead_one_is_routed_around(
    production: Sandbox, store: Store, tmp_path: Path
) -> None:
    async with two_replicas(production, store.dsn, tmp_path) as world:
        # Alice asks for help four times: haproxy hands the requests to r0 and r1 in turn
        answers = [await world.command(ALICE, "help", INCIDENTS) for _ in range(4)]
        assert [a.status for a in answers] == [200] * 4
        served = [served_by(a) for a in answers]
        assert sorted(served) == ["r0", "r0", "r1", "r1"]
        assert served[0] != served[1] and served[0::2] == [served[0]] * 2
        await world.emu.wait_for(lambda: len(world.emu.ephemerals(INCIDENTS, ALICE)) >= 4,
                                 timeout=30)
        assert [m.text for m in world.emu.ephemerals(INCIDENTS, ALICE)] == ["rollbot help"] * 4

        # r0 dies: every request now reaches r1, none is lost
        world["r0"].kill()
        after = [await world.command(ALICE, "help", INCIDENTS) for _ in range(3)]
        assert [(a.status, served_by(a)) for a in after] == [(200, "r1")] * 3
        await world.balancer.wait_serving({"r1"})

        # r0 is started again and haproxy sends it requests again
        await world.restart(world["r0"])
        again = [served_by(await world.command(ALICE, "help", INCIDENTS)) for _ in range(2)]
        assert sorted(again) == ["r0", "r1"]
        assert world["r0"].log().count("--- r0 starting") == 2

        # SIGTERM: the replica exits by itself with status 0
        assert await world["r1"].stop() == 0
