"""The sandbox production host as the end-to-end tests see it (deploy/sandbox/sandbox)."""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "deploy" / "sandbox" / "sandbox"

# The data the sandbox seeds (deploy/sandbox/sandbox): production now, and in its backups.
CURRENT_COUNTS = {"users": 5, "orders": 8}
BACKUP_COUNTS = {"users": 3, "orders": 4}
GOOD_BACKUP = "azora_prod_20261127T020000.sql.gz"
CORRUPT_BACKUP = "azora_prod_20261124T020000.sql.gz"
EXPIRED_BACKUP = "azora_prod_20261001T020000.sql.gz"


class SandboxError(RuntimeError):
    pass


def sandbox(*args: str, timeout: float = 600) -> str:
    """Run the sandbox script; a failure explains itself (end-to-end tests never skip)."""
    out = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise SandboxError(
            f"`deploy/sandbox/sandbox {' '.join(args)}` failed with status {out.returncode}; "
            f"the end-to-end tests cannot run without the sandbox production host.\n"
            f"--- stdout ---\n{out.stdout[-3000:]}\n--- stderr ---\n{out.stderr[-3000:]}")
    return out.stdout


@dataclass(frozen=True)
class Sandbox:
    state: Path
    ssh_port: int
    hardened_ssh_port: int
    api_port: int
    pg_port: int

    @classmethod
    def start(cls) -> Sandbox:
        sandbox("start")
        values: dict[str, str] = {}
        for line in sandbox("env").splitlines():
            key, sep, value = line.partition("=")
            if sep:
                values[key.strip()] = value.strip().strip("'\"")
        return cls(state=Path(values["STATE"]), ssh_port=int(values["SSH_PORT"]),
                   hardened_ssh_port=int(values["HARDENED_SSH_PORT"]),
                   api_port=int(values["API_PORT"]), pg_port=int(values["PG_PORT"]))

    @property
    def runbook(self) -> Path:
        return self.state / "rollbot.toml"

    @property
    def compose_file(self) -> Path:
        return self.state / "srv" / "azora" / "docker-compose.yml"

    @property
    def backups(self) -> Path:
        return self.state / "backups"

    def reset(self) -> None:
        sandbox("reset")

    def kill_ssh(self) -> None:
        sandbox("kill-ssh")

    def psql(self, sql: str, *, database: str = "azora_prod") -> str:
        out = subprocess.run(
            ["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p",
             str(self.pg_port), "-U", "postgres", "-d", database, "-c", sql],
            capture_output=True, text=True, timeout=60, check=True)
        return out.stdout.strip()

    def make_backup(self, name: str, *, emptied: tuple[str, ...] = ()) -> Path:
        """A fresh, complete backup of production in the backups directory, with the
        ``emptied`` tables' rows left out (`sandbox reset` removes it again)."""
        scratch = "scratch_backup_source"
        self.psql(f"DROP DATABASE IF EXISTS {scratch}", database="postgres")
        self.psql(f"CREATE DATABASE {scratch} TEMPLATE azora_prod", database="postgres")
        try:
            for table in emptied:
                self.psql(f"TRUNCATE {table}", database=scratch)
            dump = subprocess.run(
                ["pg_dump", "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "postgres",
                 "--no-owner", "--no-privileges", scratch],
                capture_output=True, timeout=60, check=True).stdout
        finally:
            self.psql(f"DROP DATABASE IF EXISTS {scratch}", database="postgres")
        path = self.backups / name
        path.write_bytes(gzip.compress(dump))
        os.chmod(path, 0o644)
        return path

    def row_counts(self) -> dict[str, int]:
        return {t: int(self.psql(f"SELECT count(*) FROM {t}")) for t in ("users", "orders")}

    def compose_up(self) -> None:
        """What a person deploying by hand does: docker-compose up -d as prod-user."""
        subprocess.run(["runuser", "-u", "prod-user", "--", "docker-compose", "-f",
                        str(self.compose_file), "up", "-d"], capture_output=True, text=True,
                       timeout=120, check=True, cwd=self.compose_file.parent)

    def name_in_compose_file(self, version: str) -> None:
        """Write ``version`` as the api's tag, as the spec's deploy workflow does with sed."""
        text = self.compose_file.read_text()
        self.compose_file.write_text(re.sub(r"azora-api:[^\s\"']+", f"azora-api:{version}",
                                            text, count=1))

    def leave_unfinished_deploy(self, *, running: str, named: str) -> None:
        """The CI order stopped before starting: ``running`` serves, the file names ``named``."""
        self.name_in_compose_file(running)
        self.compose_up()
        deadline = time.monotonic() + 60
        while self.running_image() != f"azora-api:{running}":
            if time.monotonic() > deadline:
                raise SandboxError(f"api did not start on {running}: {self.running_image()!r}")
            time.sleep(0.2)
        self.name_in_compose_file(named)

    def deploy_by_hand(self, version: str) -> None:
        """A deploy that finished: the file names ``version`` and it serves."""
        self.leave_unfinished_deploy(running=version, named=version)

    def compose_tag(self) -> str:
        found = re.search(r"azora-api:([^\s\"']+)", self.compose_file.read_text())
        return found.group(1) if found else ""

    def newest_migration(self) -> str:
        return self.psql("SELECT name FROM migrations ORDER BY executed_at DESC, id DESC LIMIT 1")
    def processes(self, needle: str) -> list[str]:
        """The host's processes whose command line contains ``needle`` (``ps`` on the host)."""
        out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True,
                             timeout=30, check=True)
        return [ln.strip() for ln in out.stdout.splitlines() if needle in ln]

    def running_image(self, service: str = "api") -> str:
        out = subprocess.run(
            ["docker", "ps", "--filter", f"label=com.docker.compose.service={service}",
             "--filter", "label=com.docker.compose.project=azora", "--format", "{{.Image}}"],
            capture_output=True, text=True, timeout=30, check=True)
        return out.stdout.strip()
