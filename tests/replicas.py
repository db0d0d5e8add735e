"""Two `rollbot serve` processes on one database behind a real haproxy, for cross-replica tests.

Each replica is a real subprocess (``python -m bot serve``) with its own port, log file and data
directory; both share ``DATABASE_URL``, the runbook and Slack (the emulator). haproxy balances
them round robin and health-checks ``GET /healthz``; Slack's requests (the emulator's sender) and
CI's deploy hooks go through haproxy, as in production. Every answer carries the name of the
replica that gave it (``X-Rollbot-Replica``), so a test can tell who answered.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bot.autorollback.contract import sign
from handlers.ids import Action
from slack_emulator import Emulator, SendResult, SlackSender
from slack_emulator.state import Message
from tests.fleet import free_port
from tests.sandbox import Sandbox
from tests.slack_world import SECRET, SLACK_TABLE, TOKEN, populate

REPO = Path(__file__).resolve().parent.parent
REPLICA_HEADER = "X-Rollbot-Replica"
# Environment of the test process that must not leak into a replica (it gets its own).
_OWN_KEYS = ("SLACK_", "ROLLBOT_", "DATABASE_URL", "PORT")


def served_by(answer: SendResult | httpx.Response) -> str:
    """The name of the replica that gave this answer (haproxy names it in a header)."""
    headers = {k.lower(): v for k, v in answer.headers.items()}
    return headers.get(REPLICA_HEADER.lower(), "(no replica: haproxy answered itself)")


class Replica:
    """One ``rollbot serve`` process: started, killed, stopped and started again by the test."""

    def __init__(self, name: str, *, env: Mapping[str, str], cwd: Path) -> None:
        self.name = name
        self.port = free_port()
        self.log_path = cwd / f"{name}.log"
        self._cwd = cwd
        self._env = {**env, "PORT": str(self.port),
                     "ROLLBOT_DATA_DIR": str(cwd / f"{name}-data")}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was never started"
        return self.process.pid

    def start(self) -> None:
        """Start the process (its log is appended to: one file across restarts)."""
        assert not self.alive, f"{self.name} is already running (pid {self.pid})"
        with self.log_path.open("ab") as log:
            log.write(f"--- {self.name} starting at {time.time():.3f}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1"],
                cwd=self._cwd, env=self._env, stdout=log, stderr=subprocess.STDOUT)

    async def wait_ready(self, timeout: float = 60) -> None:
        """Until the replica itself answers ``/healthz`` with 200."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                assert self.alive, f"{self.name} exited at start; its log:\n{self.log()}"
                try:
                    if (await client.get(f"{self.url}/healthz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, f"{self.name} not ready:\n{self.log()}"
                await asyncio.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: the process dies at once, holding whatever it held."""
        assert self.process is not None and self.alive, f"{self.name} is not running"
        self.process.kill()
        self.process.wait(timeout=30)

    def terminate(self) -> None:
        """SIGTERM, without waiting: the replica's graceful stop begins."""
        assert self.process is not None and self.alive, f"{self.name} is not running"
        self.process.send_signal(signal.SIGTERM)

    async def wait_exit(self, timeout: float = 90) -> int:
        """The exit code, once the process has exited."""
        assert self.process is not None, f"{self.name} was never started"
        deadline = time.monotonic() + timeout
        while (code := self.process.poll()) is None:
            assert time.monotonic() < deadline, f"{self.name} did not exit:\n{self.log()}"
            await asyncio.sleep(0.1)
        return code

    async def stop(self, timeout: float = 90) -> int:
        """SIGTERM and wait for the exit; its exit code."""
        self.terminate()
        return await self.wait_exit(timeout)

    def log(self) -> str:
        """Everything the replica wrote (stdout and stderr), across its restarts."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def ensure_stopped(self) -> None:
        """Teardown: SIGTERM, then SIGKILL after a grace period; by pid, never by name.

        Async: while the replica stops it may still call Slack, the emulator on this loop.
        """
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 60
        while self.process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


class Balancer:
    """haproxy in the foreground: round robin over the replicas, health check ``/healthz``."""

    def __init__(self, replicas: list[Replica], *, workdir: Path) -> None:
        self.port = free_port()
        self.config = workdir / "haproxy.cfg"
        self.log_path = workdir / "haproxy.log"
        servers = "\n".join(f"    server {r.name} 127.0.0.1:{r.port} check" for r in replicas)
        # Checks every 0.3 s, two failures take a server out, one success brings it back;
        # a refused connection is retried on the other server (redispatch), as a load
        # balancer in front of replicas that restart is expected to do.
        self.config.write_text(f"""
global
    maxconn 512

defaults
    mode http
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    retries 2
    option redispatch 1
    retry-on conn-failure empty-response

frontend rollbot
    bind 127.0.0.1:{self.port}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk GET /healthz
    http-check expect status 200
    default-server inter 300ms fastinter 300ms downinter 300ms fall 2 rise 1
    http-response set-header {REPLICA_HEADER} %s
{servers}
""")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        check = subprocess.run(["haproxy", "-c", "-q", "-f", str(self.config)],
                               capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr + check.stdout
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(["haproxy", "-db", "-f", str(self.config)],
                                            stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGUSR1)  # haproxy's soft stop
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def serving(self) -> set[str]:
        """The replicas haproxy sends requests to now, once that set is stable."""
        seen: list[str] = []
        async with httpx.AsyncClient(timeout=5) as client:
            for _ in range(6):
                try:
                    answer = await client.get(f"{self.url}/healthz")
                except httpx.HTTPError:
                    continue  # haproxy is not listening yet
                if answer.status_code == 200 and REPLICA_HEADER in answer.headers:
                    seen.append(answer.headers[REPLICA_HEADER])
        return set(seen)

    async def wait_serving(self, names: set[str], timeout: float = 30) -> None:
        """Until haproxy sends requests to exactly ``names`` (health checks have caught up)."""
        deadline = time.monotonic() + timeout
        while (now := await self.serving()) != names:
            assert self.process is not None and self.process.poll() is None, self.log()
            assert time.monotonic() < deadline, f"haproxy serves {now}, not {names}"
            await asyncio.sleep(0.2)


@dataclass
class ReplicaWorld:
    """Slack (the emulator), two replicas of rollbot and haproxy in front of them."""

    emu: Emulator
    sender: SlackSender
    sandbox: Sandbox
    replicas: list[Replica]
    balancer: Balancer
    dsn: str
    webhook_secret: str | None = None

    def __getitem__(self, name: str) -> Replica:
        return next(r for r in self.replicas if r.name == name)

    def other(self, replica: Replica) -> Replica:
        return next(r for r in self.replicas if r is not replica)

    async def restart(self, replica: Replica) -> None:
        """Start a stopped/killed replica again and wait until haproxy sends it requests."""
        replica.start()
        await replica.wait_ready()
        await self.balancer.wait_serving({r.name for r in self.replicas if r.alive})

    def logs(self) -> str:
        return "\n".join(f"===== {r.name} =====\n{r.log()}" for r in self.replicas)

    # --- what people and CI send, through haproxy --------------------------------------------

    async def command(self, user: str, text: str, channel: str, **opts: Any) -> SendResult:
        return await self.sender.slash_command(user, channel, text, **opts)

    async def click(self, user: str, message: Message, action: Action,
                    **opts: Any) -> SendResult:
        return await self.sender.block_action(user, message.channel, message.ts, action.value,
                                              **opts)

    async def hook(self, path: str, body: dict[str, Any]) -> httpx.Response:
        """CI's signed deploy hook (deploy/hook-client.sh), sent to haproxy."""
        assert self.webhook_secret, "start the replicas with webhook_secret="
        data = json.dumps(body).encode()
        ts = int(time.time())
        async with httpx.AsyncClient(timeout=30) as client:
            return await client.post(
                f"{self.balancer.url}{path}", content=data,
                headers={"X-Rollbot-Timestamp": str(ts),
                         "X-Rollbot-Signature": sign(self.webhook_secret, ts, data),
                         "Content-Type": "application/json"})

    async def wait_message(self, match: Callable[[Message], bool], *, channel: str,
                           timeout: float = 60) -> Message:
        def find() -> Message | None:
            return next((m for m in reversed(self.emu.messages(channel)) if match(m)), None)
        return await self.emu.wait_for(find, timeout=timeout)

    async def wait_log(self, replica: Replica, text: str, timeout: float = 60) -> str:
        """Until ``text`` is in the replica's log; the log."""
        deadline = time.monotonic() + timeout
        while text not in (log := replica.log()):
            assert time.monotonic() < deadline, f"{text!r} not in {replica.name}'s log:\n{log}"
            await asyncio.sleep(0.1)
        return log


def replica_env(*, dsn: str, runbook: Path, api_url: str, webhook_secret: str | None,
                slack: bool, extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_KEYS)}
    env.update(DATABASE_URL=dsn, ROLLBOT_CONFIG=str(runbook), PYTHONPATH=str(REPO),
               ROLLBOT_LOG_LEVEL="INFO", SLACK_API_URL=api_url)
    if slack:
        env.update(SLACK_BOT_TOKEN=TOKEN, SLACK_SIGNING_SECRET=SECRET)
    if webhook_secret:
        env["ROLLBOT_WEBHOOK_SECRET"] = webhook_secret
    env.update(extra)
    return env


@asynccontextmanager
async def two_replicas(sandbox: Sandbox, dsn: str, tmp: Path, *,
                       runbook_text: Callable[[str], str] = lambda t: t,
                       webhook_secret: str | None = None, slack: bool = True,
                       env: Mapping[str, str] | None = None,
                       count: int = 2) -> AsyncIterator[ReplicaWorld]:
    """Replicas ``r0`` and ``r1`` of ``rollbot serve`` on ``dsn`` (a fresh database), behind
    haproxy; Slack's request URL is haproxy's. ``slack=False``: a runbook without ``[slack]``."""
    runbook = tmp / "rollbot.toml"
    runbook.write_text(f'incident_logs_dir = "{tmp / "incident-logs"}"\n'
                       + runbook_text(sandbox.runbook.read_text())
                       + (SLACK_TABLE if slack else ""))
    async with AsyncExitStack() as stack:
        emu = await stack.enter_async_context(Emulator(token=TOKEN, signing_secret=SECRET))
        populate(emu)
        environment = replica_env(dsn=dsn, runbook=runbook, api_url=emu.api_url,
                                  webhook_secret=webhook_secret, slack=slack, extra=env or {})
        replicas = [Replica(f"r{i}", env=environment, cwd=tmp) for i in range(count)]
        for r in replicas:
            stack.push_async_callback(r.ensure_stopped)
        balancer = Balancer(replicas, workdir=tmp)
        stack.callback(balancer.stop)  # runs first (last in): no traffic while replicas stop
        for r in replicas:
            r.start()
        for r in replicas:
            await r.wait_ready()
        balancer.start()
        await balancer.wait_serving({r.name for r in replicas})
        sender = SlackSender(f"{balancer.url}/slack/events", SECRET, emu)
        yield ReplicaWorld(emu=emu, sender=sender, sandbox=sandbox, replicas=replicas,
                           balancer=balancer, dsn=dsn, webhook_secret=webhook_secret)
