"""An SRE scrapes ``/metrics`` while rollbot rolls a bad deploy back, and after.

CI announces a deploy of v1.2.3, which fails its health checks; rollbot counts down and rolls
back by itself, through ``rollbot serve`` and the Slack emulator. The scrapes show the watch's
state, the lock held during the run and free after it, the run's outcome and step durations,
every Slack call (one of them rate limited), the acks of a slash command, and the first
verification check.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.model import RunStatus
from bot.store.runs import Store
from tests.fleet import free_port
from tests.sandbox import Sandbox
from tests.slack_world import ALICE, SlackWorld, slack_world
from tests.test_e2e_autorollback import HOOK_SECRET, deploy, fast, signed_post

pytestmark = pytest.mark.e2e

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(world: SlackWorld) -> Samples:
    async with httpx.AsyncClient() as client:
        r = await client.get(f"http://127.0.0.1:{world.service.port}/metrics", timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape_until(world: SlackWorld, what: str, ok: Callable[[Samples], bool],
                       timeout: float = 120) -> Samples:
    """Scrape as Prometheus would, faster, until ``ok``: the gauges are re-read each second."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        samples = await scrape(world)
        if ok(samples):
            return samples
        if loop.time() > deadline:
            raise AssertionError(f"never scraped {what}: {sorted(samples.items())}")
        await asyncio.sleep(0.2)


def runbook(text: str) -> str:
    """A 3-second countdown, and the first verification check a second after the run."""
    marker = "[environments.production.ssh]"
    return fast(3.0)(text.replace(marker, f"verify_after_minutes = [0.02]\n{marker}", 1))


async def test_metrics_follow_an_automatic_rollback(production: Sandbox, store: Store,
                                                    tmp_path: Path) -> None:
    async with slack_world(production, store.dsn, tmp_path, runbook_text=runbook,
                           webhook_secret=HOOK_SECRET) as world:
        quiet = await scrape(world)
        assert sample(quiet, "rollbot_lock_held", environment="production") == 0
        assert sample(quiet, "rollbot_deploy_watches", state="watching") == 0
        assert ("rollbot_deploy_watches", frozenset({("state", "countdown")})) in quiet

        world.emu.rate_limit("chat.update", 1, 1)  # Slack pushes back once on an edit
        answer = await signed_post(world.service.port, "/hooks/deploy", deploy())
        assert answer.status_code == 202, answer.text
        await scrape_until(world, "the deploy counting down", lambda s: sample(
            s, "rollbot_deploy_watches", state="countdown") == 1)
        during = await scrape_until(world, "the lock held during the run", lambda s: sample(
            s, "rollbot_lock_held", environment="production") == 1)
        assert sample(during, "rollbot_runs_total", environment="production",
                      procedure="simple", outcome="succeeded") == 0

        await world.wait_message(lambda m: "Rollback completed. Service restored to v1.2.2"
                                 in m.text, timeout=180)
        after = await scrape_until(world, "the lock free again", lambda s: sample(
            s, "rollbot_lock_held", environment="production") == 0)
        assert production.running_image() == "azora-api:v1.2.2"
        [run] = await store.history()
        assert run.status is RunStatus.SUCCEEDED
        assert sample(after, "rollbot_runs_total", environment="production",
                      procedure="simple", outcome="succeeded") == 1
        assert sample(after, "rollbot_deploy_watches", state="rolled_back") == 1
        assert sample(after, "rollbot_deploy_watches", state="countdown") == 0
        steps = (await store.get_run(run.id)).steps  # type: ignore[union-attr]
        assert len(steps) == 7
        for step in steps:
            assert sample(after, "rollbot_step_duration_seconds_count", procedure="simple",
                          step=step.key) == 1, step.key
        assert sample(after, "rollbot_step_duration_seconds_sum", procedure="simple",
                      step="stop_services") > 0
        assert sample(after, "rollbot_slack_api_calls_total", method="chat.postMessage") >= 2
        assert sample(after, "rollbot_slack_api_calls_total", method="chat.update") >= 2
        assert sample(after, "rollbot_slack_api_errors_total", method="chat.update",
                      error="ratelimited") == 1
        assert sample(after, "rollbot_slack_api_errors_total", method="chat.postMessage",
                      error="ratelimited") == 0

        # The on-call asks for the status: the ack is timed.
        status = await world.command(ALICE, "status")
        assert status.acked_in_time, status
        acked = await scrape(world)
        assert sample(acked, "rollbot_ack_seconds_count") >= 1
        assert 0 < sample(acked, "rollbot_ack_seconds_sum") < 3 * sample(
            acked, "rollbot_ack_seconds_count")

        # A second after the run, its Immediate verification check runs, and is counted.
        await scrape_until(world, "the immediate verification check", lambda s: sample(
            s, "rollbot_verification_checks_total", tier="immediate", outcome="passed") == 1)
        await world.service.auto.wait_idle(60)
        assert world.problems() == []


async def test_rollbot_serve_without_slack_serves_metrics_and_logs_json(
        production: Sandbox, store: Store, tmp_path: Path) -> None:
    """A team without the Slack app runs ``rollbot serve`` for CI's hooks, and scrapes it."""
    port = free_port()
    env = {**os.environ, "ROLLBOT_CONFIG": str(production.runbook), "DATABASE_URL": store.dsn,
           "PORT": str(port), "ROLLBOT_LOG_FORMAT": "json", "ROLLBOT_LOG_LEVEL": "INFO",
           "ROLLBOT_WEBHOOK_SECRET": HOOK_SECRET}
    for key in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN"):
        env.pop(key, None)
    stderr = tmp_path / "serve.log"
    with stderr.open("w") as err:
        serve = subprocess.Popen([sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1"],
                                 env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(300):
                try:
                    r = await client.get("/metrics", timeout=5)
                    break
                except httpx.TransportError:
                    assert serve.poll() is None, stderr.read_text()
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"rollbot serve never answered: {stderr.read_text()}")
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=60)
    assert r.status_code == 200
    assert 'rollbot_lock_held{environment="production"} 0.0' in r.text
    assert 'rollbot_deploy_watches{state="watching"} 0.0' in r.text
    assert "# TYPE rollbot_slack_api_calls_total counter" in r.text  # declared, never called
    lines = [json.loads(line) for line in stderr.read_text().splitlines()]
    assert any("without Slack" in x["message"] and x["level"] == "WARNING" for x in lines)
    assert all({"time", "level", "logger", "message"} <= set(x) for x in lines)
