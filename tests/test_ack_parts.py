"""The ack path's pieces on their own: health cache, refusal counter, handoff, seen signatures."""

from __future__ import annotations

import asyncio
import threading

import httpx
from aiohttp import web

from bot.store.replays import SeenSignatures
from bot.store.runs import Store
from handlers.ack_loop import AckLoop, WorkHandoff
from handlers.health import CachedHealth
from handlers.refusals import RefusalAudit
from handlers.server import web_app


async def test_healthz_asks_the_database_once_a_second_however_many_ask() -> None:
    asked = 0

    async def ping() -> bool:
        nonlocal asked
        asked += 1
        await asyncio.sleep(0.05)
        return True

    health = CachedHealth(ping, ttl_s=0.5)
    assert await asyncio.gather(*(health.healthy() for _ in range(100))) == [True] * 100
    assert asked == 1  # one probe in flight, shared
    assert await health.healthy() and asked == 1  # still fresh
    await asyncio.sleep(0.6)
    assert await health.healthy() and asked == 2


async def test_a_probe_that_hangs_or_fails_is_unhealthy() -> None:
    async def hangs() -> bool:
        await asyncio.sleep(10)
        return True

    async def fails() -> bool:
        raise OSError("connection refused")

    assert not await CachedHealth(hangs, timeout_s=0.1).healthy()
    assert not await CachedHealth(fails).healthy()


async def test_refusals_over_the_burst_are_counted_and_written_as_one_entry() -> None:
    written: list[str] = []

    async def write(detail: str) -> None:
        written.append(detail)

    audit = RefusalAudit(write, burst=5, window_s=0.3)
    audit.start()
    for i in range(105):
        audit.record(f"refused #{i}")
    await asyncio.sleep(0.6)  # the window ends: the count is written without a new request
    assert written[:5] == [f"refused #{i}" for i in range(5)]
    assert len(written) == 6
    assert written[5].startswith("100 more Slack requests refused since ")
    assert written[5].endswith("the last: refused #104")
    # a new window writes one by one again
    audit.record("refused later")
    await audit.close()
    assert written[6:] == ["refused later"]


async def test_the_handoff_refuses_work_beyond_its_limit_and_never_drops_it_silently() -> None:
    main = asyncio.get_running_loop()
    handoff = WorkHandoff(main, limit=2)
    release = threading.Event()
    done: list[int] = []

    async def work(n: int) -> None:
        await asyncio.to_thread(release.wait, 10)
        done.append(n)

    ack = AckLoop()
    ack.start()
    try:
        async def from_ack_loop() -> list[bool]:
            return [handoff.submit(work(n)) for n in range(3)]
        accepted = await ack.run(from_ack_loop())
        assert accepted == [True, True, False]  # the third is refused, and its caller told
        assert handoff.in_flight == 2
        release.set()
        await handoff.close(10)
        assert sorted(done) == [0, 1]
        assert handoff.in_flight == 0
        assert handoff.submit(work(9)) is False  # closed: no more work taken
    finally:
        await ack.stop()


async def test_signatures_arriving_together_share_inserts_and_one_replica_wins(
    store: Store
) -> None:
    r0, r1 = await SeenSignatures.open(store.dsn), await SeenSignatures.open(store.dsn)
    try:
        fresh = [f"v0={i:064x}" for i in range(60)]
        twice = "v0=" + "a" * 64
        answers = await asyncio.gather(*(r0.first_sighting(s) for s in fresh),
                                       *(r.first_sighting(twice) for r in (r0, r1, r0, r1)))
        assert answers[:60] == [True] * 60
        assert sorted(answers[60:]) == [False, False, False, True]  # one of four, either replica
        assert not await r1.first_sighting(fresh[0])  # the other replica knows it too
        assert await r1.prune(keep_s=3600) == 0
        assert await r1.prune(keep_s=0) == 61
        assert await r0.first_sighting(fresh[0])  # forgotten after the window: new again
    finally:
        await r0.close()
        await r1.close()


async def test_routes_that_need_the_engine_run_on_the_main_loop_the_rest_on_the_ack_loop(
) -> None:
    class Engine:  # what /healthz asks
        async def ping(self) -> bool:
            return threading.current_thread() is threading.main_thread()

    async def where(request: web.Request) -> web.Response:
        return web.json_response({"thread": threading.current_thread().name,
                                  "body": (await request.read()).decode()})

    ack = AckLoop()
    ack.start()
    handoff = WorkHandoff(asyncio.get_running_loop())
    app = web_app(rollbot=Engine(), main=handoff,  # type: ignore[arg-type]
                  engine_routes=[web.post("/engine", where)])
    app.router.add_post("/ack", where)
    runner = web.AppRunner(app)

    async def start() -> int:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return int(runner.addresses[0][1])
    try:
        port = await ack.run(start())
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            engine = (await client.post("/engine", content=b"read on the ack loop")).json()
            plain = (await client.post("/ack", content=b"")).json()
            health = await client.get("/healthz")
        assert engine == {"thread": threading.main_thread().name, "body": "read on the ack loop"}
        assert plain["thread"] == "rollbot-ack"
        assert health.json() == {"ok": True}  # the probe ran on the main thread
    finally:
        await ack.run(runner.cleanup())
        await ack.stop()
