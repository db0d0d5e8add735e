"""The terminal fallback: `rollbot plan`, `rollbot rollback --yes`, history, exit statuses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.store.runs import Store
from tests.sandbox import Sandbox

pytestmark = pytest.mark.e2e


def rollbot_cli(sb: Sandbox, dsn: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ROLLBOT_CONFIG": str(sb.runbook), "DATABASE_URL": dsn,
           "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "bot", *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=cwd)


@pytest.fixture
def dsn(store: Store) -> str:
    return store.dsn


def test_plan_changes_nothing_then_rollback_succeeds(production: Sandbox, dsn: str,
                                                     tmp_path: Path) -> None:
    plan = rollbot_cli(production, dsn, "plan", "v1.2.2", cwd=tmp_path)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "v1.2.3 → v1.2.2" in plan.stdout
    assert "docker-compose.yml down" in plan.stdout and "up -d" in plan.stdout
    assert production.running_image() == "azora-api:v1.2.3"  # a plan changes nothing

    run = rollbot_cli(production, dsn, "rollback", "v1.2.2", "--yes", "--reason", "bad deploy",
                      "--as", "alice", cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "▶ [1/7] Check current version" in run.stdout
    assert "✓ [7/7] Confirm all services are up" in run.stdout
    assert "SUCCEEDED" in run.stdout
    assert production.running_image() == "azora-api:v1.2.2"

    status = rollbot_cli(production, dsn, "status", cwd=tmp_path)
    assert "Pending: immediate verification of run #1 due" in status.stdout
    assert "Pending: comprehensive verification of run #1 due" in status.stdout

    again = rollbot_cli(production, dsn, "rollback", "v1.2.2", "--yes", cwd=tmp_path)
    assert again.returncode == 1
    assert "already runs v1.2.2" in again.stdout

    report = rollbot_cli(production, dsn, "report", "1", cwd=tmp_path)
    assert report.returncode == 0, report.stdout + report.stderr
    assert report.stdout.startswith("# Rollback Report")
    assert "- Rollback to version: v1.2.2" in report.stdout
    assert "cli:alice" in report.stdout
    assert list((tmp_path / "incident-logs").glob("rollback-*.md"))  # written by the run

    history = rollbot_cli(production, dsn, "history", cwd=tmp_path)
    assert history.returncode == 0
    assert "cli:alice" in history.stdout and "succeeded" in history.stdout
    assert "refused" in history.stdout


def test_without_yes_and_without_a_terminal_nothing_runs(production: Sandbox, dsn: str,
                                                        tmp_path: Path) -> None:
    out = rollbot_cli(production, dsn, "rollback", "v1.2.2", cwd=tmp_path)
    assert out.returncode == 1
    assert "pass --yes" in out.stdout
    assert production.running_image() == "azora-api:v1.2.3"


def test_a_bad_version_is_refused_with_exit_2(production: Sandbox, dsn: str,
                                              tmp_path: Path) -> None:
    out = rollbot_cli(production, dsn, "rollback", "v1.2.2;reboot", "--yes", cwd=tmp_path)
    assert out.returncode == 2
    assert "is not a release version" in out.stdout
