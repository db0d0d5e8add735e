"""deploy/compose.yml: rollbot and PostgreSQL 15, as Debian's docker-compose 1.29 reads it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.config import load_runbook

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "Kq7pZt2v"


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A checkout laid out as deploy/compose.yml's header asks: .env, runbook and SSH files."""
    shutil.copy(ROOT / "Dockerfile", tmp_path / "Dockerfile")
    deploy = tmp_path / "deploy"
    (deploy / "ssh").mkdir(parents=True)
    shutil.copy(ROOT / "deploy" / "compose.yml", deploy / "compose.yml")
    env = (ROOT / ".env.example").read_text(encoding="utf-8")
    (deploy / ".env").write_text(f"{env}\nPOSTGRES_PASSWORD={PASSWORD}\n", encoding="utf-8")
    shutil.copy(ROOT / "rollbot.example.toml", deploy / "rollbot.toml")
    (deploy / "ssh" / "id_ed25519").write_text("not a real key\n", encoding="utf-8")
    (deploy / "ssh" / "known_hosts").write_text("prod-host ssh-ed25519 AAAA\n", encoding="utf-8")
    return tmp_path


def compose_config(checkout: Path) -> subprocess.CompletedProcess[str]:
    # From elsewhere, as `docker-compose -f deploy/compose.yml` from another directory would;
    # POSTGRES_PASSWORD must come from deploy/.env, not from whoever runs the tests.
    env = {k: v for k, v in os.environ.items() if k != "POSTGRES_PASSWORD"}
    return subprocess.run(["docker-compose", "-f", str(checkout / "deploy" / "compose.yml"),
                           "config"], capture_output=True, text=True, timeout=120, env=env,
                          cwd="/")


def binds(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["target"]: m for m in service["volumes"] if m["type"] == "bind"}


def test_compose_validates_and_gives_rollbot_its_postgres_secrets_and_read_only_files(
        checkout: Path) -> None:
    out = compose_config(checkout)
    assert out.returncode == 0, out.stderr
    config = yaml.safe_load(out.stdout)
    rollbot, db = config["services"]["rollbot"], config["services"]["db"]

    # rollbot is built from the repository's Dockerfile and talks to the db service.
    assert rollbot["build"]["context"] == str(checkout)
    assert (Path(rollbot["build"]["context"]) / rollbot["build"]["dockerfile"]).is_file()
    assert rollbot["environment"]["DATABASE_URL"] == (
        f"postgresql://rollbot:{PASSWORD}@db:5432/rollbot")
    assert db["image"] == "postgres:15"
    assert db["environment"] == {"POSTGRES_USER": "rollbot", "POSTGRES_DB": "rollbot",
                                 "POSTGRES_PASSWORD": PASSWORD}
    assert rollbot["depends_on"] == {"db": {"condition": "service_healthy"}}

    # PostgreSQL's data outlives the container: a named volume.
    [data] = [m for m in db["volumes"] if m["target"] == "/var/lib/postgresql/data"]
    assert data["type"] == "volume" and data["source"] in config["volumes"]

    # The secrets come from .env (env_file): compose hands them to rollbot's environment.
    raw = yaml.safe_load((checkout / "deploy" / "compose.yml").read_text(encoding="utf-8"))
    assert raw["services"]["rollbot"]["env_file"] == ".env"
    assert rollbot["environment"]["SLACK_BOT_TOKEN"] == "xoxb-your-bot-token"
    assert rollbot["environment"]["ROLLBOT_WEBHOOK_SECRET"] == "change-me"

    # The runbook, the SSH key and known_hosts: read-only, where the example runbook expects them.
    # .env.example's ROLLBOT_CONFIG (./rollbot.toml) is a checkout's path: compose's wins.
    assert rollbot["environment"]["ROLLBOT_CONFIG"] == "/etc/rollbot/rollbot.toml"
    runbook = load_runbook(checkout / "deploy" / "rollbot.toml")
    ssh = runbook.environments[runbook.default_environment].ssh
    mounted = binds(rollbot)
    expected = {rollbot["environment"]["ROLLBOT_CONFIG"]: "rollbot.toml",
                str(ssh.key_file): "ssh/id_ed25519", str(ssh.known_hosts): "ssh/known_hosts"}
    assert set(mounted) == set(expected)
    for target, source in expected.items():
        assert mounted[target]["source"] == str(checkout / "deploy" / source)
        assert mounted[target]["read_only"] is True, f"{target} is mounted writable"

    # It stays up, and Docker knows when it is not healthy.
    for service in (rollbot, db):
        assert service["restart"] == "unless-stopped"
        assert service["healthcheck"]["test"]
    assert "/healthz" in " ".join(rollbot["healthcheck"]["test"])
    assert rollbot["read_only"] is True


def test_without_a_database_password_compose_says_where_to_set_it(checkout: Path) -> None:
    env_file = checkout / "deploy" / ".env"
    env_file.write_text(env_file.read_text(encoding="utf-8").replace(
        f"POSTGRES_PASSWORD={PASSWORD}", ""), encoding="utf-8")
    out = compose_config(checkout)
    assert out.returncode != 0
    assert "set POSTGRES_PASSWORD in deploy/.env" in out.stderr
