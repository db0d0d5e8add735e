"""Benchmark: Procedure 1 (v1.2.3 → v1.2.2) on the sandbox host, rollbot against shell baselines.

Baselines, measured in the same process on the same host:
  (a) the spec's commands as typed by hand in one SSH session, with its ``sleep 30``;
  (b) an ideal shell script in one SSH session that polls health every 0.2 s.
Prints both ratios, rollbot's per-step breakdown and the per-command overhead of an SSH exec
channel. Run it with ``./run bench`` (which starts the sandbox and sets ROLLBOT_CONFIG).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import asyncssh
import httpx

from bot.config import EnvironmentConfig, load_runbook
from bot.edges.http import HttpxProbe
from bot.model import ProcedureName, RollbackRequest, RunOutcome, RunStatus
from bot.service import Rollbot
from bot.store.embedded_pg import EmbeddedPostgres
from bot.store.runs import Store
from bot.versions import parse_version

ROOT = Path(__file__).resolve().parent.parent
SANDBOX = ROOT / "deploy" / "sandbox" / "sandbox"


def reset() -> None:
    subprocess.run([str(SANDBOX), "reset"], check=True, capture_output=True, timeout=300)


async def connect(env: EnvironmentConfig) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(env.ssh.host, port=env.ssh.port, username=env.ssh.user,
                                  client_keys=[str(env.ssh.key_file)],
                                  known_hosts=str(env.ssh.known_hosts), config=None,
                                  agent_path=None)


def shell_script(env: EnvironmentConfig, *, ideal: bool) -> str:
    d, f = shlex.quote(env.compose.directory), shlex.quote(env.compose.file)
    dc = f"{env.compose.command} -f {f}"
    wait = (f"until curl -fsS -o /dev/null {env.health_url}; do sleep 0.2; done" if ideal
            else "sleep 30")
    typed = "" if ideal else (f"{dc} ps; docker images | grep {env.image}; "
                              f"docker images | grep {env.image} | head -5; ")
    return (f"set -e; cd {d}; {typed}{dc} down; "
            f"sed -i 's/image: {env.image}:v1.2.3/image: {env.image}:v1.2.2/' {f}; "
            f"{dc} up -d; {wait}; curl -fsS {env.health_url}; curl -fsS {env.version_url}")


async def time_shell(env: EnvironmentConfig, *, ideal: bool) -> float:
    reset()
    started = time.monotonic()
    async with await connect(env) as conn:
        result = await conn.run(shell_script(env, ideal=ideal), check=False)
    took = time.monotonic() - started
    if result.exit_status != 0:
        raise SystemExit(f"baseline failed: {result.stderr}")
    return took


async def time_rollbot(bot: Rollbot) -> tuple[float, RunOutcome]:
    reset()
    request = RollbackRequest(environment="production", procedure=ProcedureName.SIMPLE,
                              target=parse_version("v1.2.2"), requested_by="bench")
    started = time.monotonic()
    outcome = await bot.rollback(request)
    took = time.monotonic() - started
    if outcome.status is not RunStatus.SUCCEEDED:
        raise SystemExit(f"rollbot run failed: {outcome.message}")
    return took, outcome


async def command_overhead(env: EnvironmentConfig, n: int) -> tuple[float, float, float]:
    """Seconds per `true`: exec channel on one connection, inside one shell, new connection."""
    async with await connect(env) as conn:
        await conn.run("true")
        t = time.monotonic()
        for _ in range(n):
            await conn.run("true", check=True)
        per_channel = (time.monotonic() - t) / n
        t = time.monotonic()
        await conn.run("; ".join(["true"] * n), check=True)
        in_shell = (time.monotonic() - t) / n
    t = time.monotonic()
    for _ in range(max(3, n // 4)):
        async with await connect(env) as c2:
            await c2.run("true", check=True)
    per_connection = (time.monotonic() - t) / max(3, n // 4)
    return per_channel, in_shell, per_connection


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--skip-typed", action="store_true", help="skip the 30 s typed baseline")
    args = ap.parse_args()
    runbook = load_runbook(Path(os.environ.get("ROLLBOT_CONFIG", "rollbot.toml")))
    env = runbook.environments["production"]
    base = Path(tempfile.mkdtemp(prefix="rollbot-bench-"))
    os.chmod(base, 0o755)
    pg = EmbeddedPostgres(base)
    dsn = await asyncio.to_thread(pg.start)
    store = await Store.open(dsn)
    try:
        async with httpx.AsyncClient() as client:
            bot = Rollbot(runbook=runbook, store=store, probe=HttpxProbe(client))
            ideal, mine, outcomes = [], [], []
            for _ in range(args.runs):  # interleaved, so drift hits both alike
                ideal.append(await time_shell(env, ideal=True))
                took, outcome = await time_rollbot(bot)
                mine.append(took)
                outcomes.append(outcome)
            typed = None if args.skip_typed else await time_shell(env, ideal=False)
            per_channel, in_shell, per_conn = await command_overhead(env, 20)
    finally:
        await store.close()
        await asyncio.to_thread(pg.stop)
        reset()
    m_ideal, m_mine = statistics.median(ideal), statistics.median(mine)
    print(f"Procedure 1 on the sandbox, v1.2.3 → v1.2.2, median of {args.runs} runs")
    print(f"  rollbot                      {m_mine:6.2f} s   (runs: "
          f"{', '.join(f'{x:.2f}' for x in mine)})")
    print(f"  (b) ideal script, 0.2 s poll {m_ideal:6.2f} s   (runs: "
          f"{', '.join(f'{x:.2f}' for x in ideal)})")
    if typed is not None:
        print(f"  (a) spec typed, sleep 30     {typed:6.2f} s")
        print(f"  rollbot / typed  = {m_mine / typed:.2f}")
    print(f"  rollbot / ideal  = {m_mine / m_ideal:.2f}   (target ≤ 1.10)")
    best = outcomes[mine.index(m_mine)] if m_mine in mine else outcomes[0]
    print("Per step (the median rollbot run):")
    accounted = 0.0
    for s in best.steps:
        d = s.duration_s or 0.0
        accounted += d
        print(f"  {s.title:<34} {d:6.2f} s")
    print(f"  {'connect + pre-flight + records':<34} {m_mine - accounted:6.2f} s")
    print("Per-command overhead:")
    print(f"  exec channel on the open connection  {per_channel * 1000:7.1f} ms  (rollbot's way)")
    print(f"  inside one shell                     {in_shell * 1000:7.1f} ms")
    print(f"  new SSH connection per command       {per_conn * 1000:7.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
