"""A platform team ships rollbot's logs to a log pipeline: ``ROLLBOT_LOG_FORMAT=json``.

On the terminal, with passwords in the runbook's commands, the on-call rolls production back
with its migration. Every line rollbot logs is one JSON object; the lines logged while the run
goes name the run and the environment; no line holds the password.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bot.model import RunStatus
from bot.store.runs import Store
from tests.sandbox import Sandbox
from tests.test_e2e_secrets import PASSWORD, with_passwords

pytestmark = pytest.mark.e2e


def rollbot_json(runbook: Path, dsn: str, *args: str, cwd: Path
                 ) -> subprocess.CompletedProcess[str]:
    # INFO: asyncssh logs each command it sends, passwords and all, before redaction
    env = {**os.environ, "ROLLBOT_CONFIG": str(runbook), "DATABASE_URL": dsn,
           "ROLLBOT_LOG_LEVEL": "INFO", "ROLLBOT_LOG_FORMAT": "json", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "bot", *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=cwd)


async def test_a_run_logs_one_json_object_per_line_naming_the_run(
        production: Sandbox, store: Store, tmp_path: Path) -> None:
    runbook = tmp_path / "rollbot.toml"
    runbook.write_text(f'incident_logs_dir = "{tmp_path / "incident-logs"}"\n'
                       + with_passwords(production.runbook.read_text(),
                                        pg_port=production.pg_port))
    assert f"PGPASSWORD={PASSWORD}" in runbook.read_text()

    run = rollbot_json(runbook, store.dsn, "rollback", "v1.2.2", "--procedure", "migrations",
                       "--yes", "--as", "alice", cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert production.running_image() == "azora-api:v1.2.2"
    [record] = await store.history()
    assert record.status is RunStatus.SUCCEEDED

    lines: list[dict[str, Any]] = []
    for text in run.stderr.splitlines():
        line = json.loads(text)  # every line, or this raises with the line that is not JSON
        assert isinstance(line, dict) and {"time", "level", "logger", "message"} <= set(line)
        lines.append(line)
    assert PASSWORD not in run.stderr
    assert any("Command: " in x["message"] for x in lines), [x["message"] for x in lines]
    # asyncssh's line for each command sent during the run names the run
    of_the_run = [x for x in lines if x.get("run_id") == record.id]
    assert of_the_run
    assert all(x["environment"] == "production" for x in of_the_run)
    assert any("PGPASSWORD=***" in x["message"] for x in of_the_run)
    assert {x["logger"] for x in of_the_run} >= {"asyncssh"}
    # pre-flight's reads come before the run has a number: they name the environment only
    assert any(x.get("environment") == "production" and "run_id" not in x for x in lines)
