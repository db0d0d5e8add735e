"""The metrics an SRE scrapes: what each hook counts, the shared gauges' cache, the Slack meter."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from slack_sdk.errors import SlackApiError

from bot.events import RunFinished, RunStarted, StepFinished, StepInfo
from bot.model import (
    ProcedureName,
    RollbackRequest,
    RunOutcome,
    RunRecord,
    RunStatus,
    StepResult,
    StepStatus,
    Tier,
    VerificationItem,
    VerificationResult,
)
from bot.telemetry.metrics import CONTENT_TYPE, Metrics, SharedState
from handlers.metering import MeteredWebClient, ack_timer, metrics_route
from slack_emulator import Emulator
from tests.fleet import free_port

T0 = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def record(status: RunStatus, procedure: ProcedureName = ProcedureName.SIMPLE) -> RunRecord:
    return RunRecord(id=7, environment="production", procedure=procedure, status=status,
                     requested_by="U0ALICE", reason="", from_version="v1.2.3",
                     to_version="v1.2.2", backup=None, created_at=T0, finished_at=T0,
                     host_state="", message="", steps=())


def test_each_ended_run_counts_once_under_its_outcome() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.run_ended(record(RunStatus.SUCCEEDED))
    metrics.run_ended(record(RunStatus.FAILED, ProcedureName.RESTORE))
    metrics.run_ended(record(RunStatus.FAILED, ProcedureName.RESTORE))
    assert value(metrics, "rollbot_runs_total", environment="production", procedure="simple",
                 outcome="succeeded") == 1
    assert value(metrics, "rollbot_runs_total", environment="production", procedure="restore",
                 outcome="failed") == 2


async def test_step_durations_are_observed_per_procedure_and_step_key() -> None:
    metrics = Metrics(CollectorRegistry())
    request = RollbackRequest(environment="production", procedure=ProcedureName.SIMPLE,
                              target=None, requested_by="U0ALICE")
    stop = StepInfo(index=2, key="stop_services", title="Stop services", destructive=True,
                    shows=())
    await metrics.observe_run(RunStarted(run_id=7, request=request, from_version="v1.2.3",
                                         to_version="v1.2.2", steps=(stop,), checks=()))
    ran = StepResult(key="stop_services", title="Stop services", status=StepStatus.SUCCEEDED,
                     started_at=T0, finished_at=T0 + timedelta(seconds=4))
    skipped = StepResult(key="stop_services", title="Stop services", status=StepStatus.SKIPPED,
                         started_at=None, finished_at=None)
    await metrics.observe_run(StepFinished(run_id=7, step=stop, result=ran, host_state=""))
    await metrics.observe_run(StepFinished(run_id=7, step=stop, result=skipped, host_state=""))
    await metrics.observe_run(RunFinished(run_id=7, outcome=RunOutcome(
        run_id=7, status=RunStatus.SUCCEEDED, host_state="", message="")))
    labels = {"procedure": "simple", "step": "stop_services"}
    assert value(metrics, "rollbot_step_duration_seconds_count", **labels) == 1  # not the skip
    assert value(metrics, "rollbot_step_duration_seconds_sum", **labels) == 4
    assert value(metrics, "rollbot_step_duration_seconds_bucket", le="5.0", **labels) == 1
    assert value(metrics, "rollbot_step_duration_seconds_bucket", le="2.0", **labels) == 0


async def test_verification_checks_count_by_tier_and_outcome() -> None:
    metrics = Metrics(CollectorRegistry())
    for ok in (True, False, True):
        await metrics.verification_checked(VerificationResult(
            run_id=7, tier=Tier.IMMEDIATE, due_at=T0, ran_at=T0, late_s=0,
            items=(VerificationItem(name="Health", ok=ok, detail=""),)))
    assert value(metrics, "rollbot_verification_checks_total", tier="immediate",
                 outcome="passed") == 2
    assert value(metrics, "rollbot_verification_checks_total", tier="immediate",
                 outcome="failed") == 1


class Database:
    def __init__(self) -> None:
        self.reads = 0
        self.state = SharedState(locked=frozenset({"production"}), deploys={"watching": 2})
        self.down = False

    async def __call__(self) -> SharedState:
        self.reads += 1
        if self.down:
            raise OSError("connection refused")
        return self.state


async def test_shared_gauges_come_from_the_database_at_most_once_a_second(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    clock = [1000.0]
    monkeypatch.setattr("bot.telemetry.metrics.time.monotonic", lambda: clock[0])
    database = Database()
    metrics = Metrics(CollectorRegistry(), environments=("production", "staging"),
                      read_shared=database)
    text = (await metrics.exposition()).decode()
    assert 'rollbot_lock_held{environment="production"} 1.0' in text
    assert 'rollbot_lock_held{environment="staging"} 0.0' in text
    assert 'rollbot_deploy_watches{state="watching"} 2.0' in text
    assert 'rollbot_deploy_watches{state="countdown"} 0.0' in text  # every state, even empty
    await metrics.exposition()
    assert database.reads == 1  # a scrape storm costs one query a second

    clock[0] += 1.5
    database.state = SharedState()
    await metrics.exposition()
    assert database.reads == 2
    assert value(metrics, "rollbot_lock_held", environment="production") == 0
    assert value(metrics, "rollbot_deploy_watches", state="watching") == 0

    clock[0] += 1.5
    database.state = SharedState(locked=frozenset({"staging"}))
    await metrics.exposition()
    clock[0] += 1.5
    database.down = True
    with caplog.at_level(logging.WARNING):
        await metrics.exposition()
    # the last truth read stays: a vanished gauge would read as "nothing is locked"
    assert value(metrics, "rollbot_lock_held", environment="staging") == 1
    assert "could not read the shared state from the database: connection refused" in caplog.text


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(token="xoxb-metrics") as e:
        e.add_channel("C0INCIDENTS", "incidents")
        yield e


async def test_every_slack_call_is_counted_and_each_failure_named(emu: Emulator) -> None:
    metrics = Metrics(CollectorRegistry())
    client = MeteredWebClient(token="xoxb-metrics", base_url=emu.api_url, timeout=5,
                              on_call=metrics.slack_call)
    await client.chat_postMessage(channel="C0INCIDENTS", text="rollback started")
    emu.fail_method("chat.postMessage", "channel_not_found", 1)
    with pytest.raises(SlackApiError):
        await client.chat_postMessage(channel="C0INCIDENTS", text="again")
    emu.rate_limit("chat.update", 1, 1)
    with pytest.raises(SlackApiError):
        await client.chat_update(channel="C0INCIDENTS", ts="1.0", text="edited")
    closed = MeteredWebClient(token="xoxb-metrics", timeout=2, on_call=metrics.slack_call,
                              base_url=f"http://127.0.0.1:{free_port()}/api/")
    with pytest.raises(Exception):  # noqa: B017 - whichever aiohttp error: its name is counted
        await closed.auth_test()

    assert value(metrics, "rollbot_slack_api_calls_total", method="chat.postMessage") == 2
    assert value(metrics, "rollbot_slack_api_errors_total", method="chat.postMessage",
                 error="channel_not_found") == 1
    assert value(metrics, "rollbot_slack_api_calls_total", method="chat.update") == 1
    assert value(metrics, "rollbot_slack_api_errors_total", method="chat.update",
                 error="ratelimited") == 1
    assert value(metrics, "rollbot_slack_api_calls_total", method="auth.test") == 1
    transport = [s for m in metrics.registry.collect() for s in m.samples
                 if s.name == "rollbot_slack_api_errors_total"
                 and s.labels["method"] == "auth.test"]
    assert [s.labels["error"] for s in transport] == ["ClientConnectorError"]


async def test_acks_are_timed_on_the_events_path_only_and_metrics_are_served() -> None:
    metrics = Metrics(CollectorRegistry())

    async def events(_request: web.Request) -> web.Response:
        return web.Response(text="")

    app = web.Application(middlewares=[ack_timer(metrics, path="/slack/events")])
    app.add_routes([web.post("/slack/events", events), web.get("/other", events),
                    metrics_route(metrics)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for _ in range(3):
                await http.post("/slack/events", content=b"{}")
            await http.get("/other")
            scraped = await http.get("/metrics")
    finally:
        await runner.cleanup()
    assert scraped.status_code == 200
    assert scraped.headers["content-type"] == CONTENT_TYPE
    assert "rollbot_ack_seconds_count 3.0" in scraped.text
    assert "# TYPE rollbot_runs_total counter" in scraped.text
