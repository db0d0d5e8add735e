"""ROLLBOT_LOG_FORMAT=json: one JSON object per line, the run bound to it, secrets hidden."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.errors import ConfigError
from bot.telemetry.logs import JsonFormatter, configure_logging, run_logged


def test_lines_of_a_run_name_it_and_others_do_not() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("rollbot.test.run")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        log.info("before the run")
        with run_logged(environment="production"):
            log.info("pre-flight of %s", "v1.2.2")
            with run_logged(environment="production", run_id=42):
                log.warning("step 3 of run")
        log.info("after the run")
    finally:
        log.removeHandler(handler)
    before, preflight, step, after = (json.loads(x) for x in stream.getvalue().splitlines())
    assert set(before) == {"time", "level", "logger", "message"}
    assert before["logger"] == "rollbot.test.run" and before["level"] == "INFO"
    assert before["time"].endswith("+00:00")
    assert preflight["message"] == "pre-flight of v1.2.2"
    assert preflight["environment"] == "production" and "run_id" not in preflight
    assert step["run_id"] == 42 and step["environment"] == "production"
    assert step["level"] == "WARNING"
    assert "run_id" not in after and "environment" not in after


async def test_tasks_a_run_starts_carry_its_binding() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("rollbot.test.task")
    log.addHandler(handler)
    log.setLevel(logging.INFO)

    async def heartbeat() -> None:
        log.info("heartbeat")

    try:
        with run_logged(environment="staging", run_id=9):
            task = asyncio.create_task(heartbeat())  # like the run's event bus and heartbeat
        log.info("outside")
        await task
    finally:
        log.removeHandler(handler)
    outside, beat = (json.loads(x) for x in stream.getvalue().splitlines())
    assert beat["message"] == "heartbeat" and beat["run_id"] == 9
    assert beat["environment"] == "staging"
    assert "run_id" not in outside


def test_secrets_and_tracebacks_are_redacted_in_json() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("rollbot.test.secret")
    log.addHandler(handler)
    try:
        try:
            raise RuntimeError("psql postgresql://app:hunter2@db/prod failed")
        except RuntimeError:
            log.exception("Command: env PGPASSWORD=%s psql -c 'select 1'", "hunter2")
    finally:
        log.removeHandler(handler)
    (line,) = (json.loads(x) for x in stream.getvalue().splitlines())
    assert line["message"] == "Command: env PGPASSWORD=*** psql -c 'select 1'"
    assert line["level"] == "ERROR"
    assert "RuntimeError" in line["exception"] and "Traceback" in line["exception"]
    assert "hunter2" not in json.dumps(line)
    assert "postgresql://app:***@db/prod" in line["exception"]


def test_an_unknown_format_or_level_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="ROLLBOT_LOG_FORMAT is 'xml': it must be 'text' or"):
        configure_logging(level="INFO", log_format="xml")
    with pytest.raises(ConfigError, match="ROLLBOT_LOG_LEVEL is 'LOUD'"):
        configure_logging(level="LOUD", log_format="json")


def test_the_cli_refuses_an_unknown_format_before_doing_anything(tmp_path: Path) -> None:
    env = {**os.environ, "ROLLBOT_LOG_FORMAT": "yaml",
           "ROLLBOT_CONFIG": str(tmp_path / "missing.toml")}
    done = subprocess.run([sys.executable, "-m", "bot", "status"], capture_output=True,
                          text=True, timeout=60, env=env, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "ROLLBOT_LOG_FORMAT is 'yaml': it must be 'text' or 'json'" in done.stdout
    assert "Traceback" not in done.stderr


def test_the_cli_logs_json_lines(tmp_path: Path) -> None:
    # The runbook is missing: the refusal is printed; at DEBUG asyncio logs its selector.
    env = {**os.environ, "ROLLBOT_LOG_FORMAT": "json", "ROLLBOT_LOG_LEVEL": "DEBUG",
           "ROLLBOT_CONFIG": str(tmp_path / "missing.toml")}
    done = subprocess.run([sys.executable, "-m", "bot", "status"], capture_output=True,
                          text=True, timeout=60, env=env, cwd=tmp_path)
    assert done.returncode == 2
    assert "runbook file not found" in done.stdout
    logged = [json.loads(line) for line in done.stderr.splitlines()]
    assert {"level": "DEBUG", "logger": "asyncio"}.items() <= logged[0].items()
    assert all({"time", "level", "logger", "message"} <= set(x) for x in logged)


def test_warnings_and_a_crash_are_json_lines_too(tmp_path: Path) -> None:
    script = (
        "import warnings\n"
        "from bot.telemetry.logs import configure_logging\n"
        "configure_logging(level='INFO', log_format='json')\n"
        "warnings.warn('old option')\n"
        "raise RuntimeError('boom with TOKEN=abc123')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).parent.parent)
    assert done.returncode == 1
    warned, crashed = (json.loads(line) for line in done.stderr.splitlines())
    assert warned["logger"] == "py.warnings" and "old option" in warned["message"]
    assert crashed["level"] == "CRITICAL"
    assert "RuntimeError: boom with TOKEN=***" in crashed["exception"]
    assert "abc123" not in done.stderr
