"""Benchmark: a fleet of 8 sandbox hosts, canary 1 then one batch of 7, v1.2.3 → v1.2.2.

The hosts are copies of the sandbox's compose app (``tests/fleet.py``): each its own directory,
port and compose project, reached through the sandbox's sshd over its own SSH connection. In the
same process, rounds alternate which side goes first:
  rollbot: ``Rollbot.rollback`` (simple procedure) on the fleet runbook, canary 1, batch_size 7;
  ideal:   the same plan by script, one SSH connection per host: the canary's commands (compose
           down, edit the tag, up -d, poll health every 0.2 s, check the version), then the
           other 7 hosts' in parallel.
Every host is put back on v1.2.3 (and serving it) before each timed run. Prints both medians and
the median of the per-round ratios (target ≤ 1.25). Run it with ``./run bench-fleet``.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import re
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import asyncssh
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the fleet hosts are made as the end-to-end tests make them

from bot.config import EnvironmentConfig, Runbook, load_runbook  # noqa: E402
from bot.edges.http import HttpxProbe  # noqa: E402
from bot.model import ProcedureName, RollbackRequest, RunStatus, StepResult  # noqa: E402
from bot.service import Rollbot  # noqa: E402
from bot.store.embedded_pg import EmbeddedPostgres  # noqa: E402
from bot.store.runs import Store  # noqa: E402
from bot.versions import parse_version  # noqa: E402
from tests.fleet import Fleet, FleetHost, as_prod_user, fleet_runbook  # noqa: E402
from tests.sandbox import Sandbox  # noqa: E402

HOSTS = [f"web-{n}" for n in range(1, 9)]
BAD, GOOD = "v1.2.3", "v1.2.2"
TARGET_RATIO = 1.25


class NotAFleetRun(Exception):
    """rollbot's run did not roll every host back: this checkout has no fleet run yet."""


async def serve_bad_release(fleet: Fleet) -> None:
    """Every host back on v1.2.3, started and answering, before a timed run."""
    async def one(host: FleetHost) -> None:
        host.file.write_text(re.sub(r"azora-api:[^\s\"']+", f"azora-api:{BAD}",
                                    host.file.read_text(), count=1))
        out = await asyncio.to_thread(as_prod_user, *host.compose, "up", "-d", cwd=host.dir)
        if out.returncode != 0:
            raise SystemExit(f"{host.name}: compose up failed: {out.stderr[-500:]}")
        deadline = time.monotonic() + 60
        while await asyncio.to_thread(host.version) != BAD:
            if time.monotonic() > deadline:
                raise SystemExit(f"{host.name} does not serve {BAD}: {host.version()}")
            await asyncio.sleep(0.1)
    await asyncio.gather(*(one(h) for h in fleet.hosts))


def host_script(env: EnvironmentConfig) -> str:
    """The simple procedure on one host as a person would script it, with no waiting to spare."""
    f = shlex.quote(env.compose.file)
    dc = f"{env.compose.command} -f {f}"
    return (f"set -e; cd {shlex.quote(env.compose.directory)}; {dc} down; "
            f"sed -i 's/image: {env.image}:{BAD}/image: {env.image}:{GOOD}/' {f}; {dc} up -d; "
            f"until curl -fsS -o /dev/null {env.health_url}; do sleep 0.2; done; "
            f'test "$(curl -fsS {env.version_url})" = {GOOD}')


async def roll_host_by_script(name: str, env: EnvironmentConfig) -> None:
    async with asyncssh.connect(env.ssh.host, port=env.ssh.port, username=env.ssh.user,
                                client_keys=[str(env.ssh.key_file)],
                                known_hosts=str(env.ssh.known_hosts), config=None,
                                agent_path=None) as conn:
        result = await conn.run(host_script(env), check=False)
    if result.exit_status != 0:
        raise SystemExit(f"ideal script failed on {name}: {str(result.stderr)[-500:]}")


@dataclass(frozen=True)
class Timing:
    """One timed run: the whole, the canary's part and the batch's part, in seconds."""

    total: float
    canary: float
    batch: float


async def time_ideal(env: EnvironmentConfig) -> Timing:
    """The canary by script, then the other 7 in parallel."""
    (canary, canary_env), *rest = env.members
    started = time.monotonic()
    await roll_host_by_script(canary, canary_env)
    canary_done = time.monotonic()
    await asyncio.gather(*(roll_host_by_script(n, e) for n, e in rest))
    done = time.monotonic()
    return Timing(total=done - started, canary=canary_done - started, batch=done - canary_done)


def span(steps: list[StepResult]) -> float:
    """From the first step's start to the last step's end (the steps of hosts run together)."""
    starts = [s.started_at for s in steps if s.started_at is not None]
    ends = [s.finished_at for s in steps if s.finished_at is not None]
    return (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0


async def time_rollbot(bot: Rollbot, fleet: Fleet) -> Timing:
    request = RollbackRequest(environment="production", procedure=ProcedureName.SIMPLE,
                              target=parse_version(GOOD), requested_by="bench")
    started = time.monotonic()
    outcome = await bot.rollback(request)
    took = time.monotonic() - started
    if outcome.status is not RunStatus.SUCCEEDED:
        raise SystemExit(f"rollbot run failed: {outcome.message}")
    running = {h.name: h.running_image() for h in fleet.hosts}
    behind = [n for n, image in running.items() if image != f"azora-api:{GOOD}"]
    if behind or len(outcome.hosts) != len(fleet.hosts):
        raise NotAFleetRun(
            f"rollbot's run #{outcome.run_id} ended {outcome.status} but left "
            f"{', '.join(behind) or 'no host'} behind and reported {len(outcome.hosts)} host "
            f"outcome(s) for {len(fleet.hosts)} hosts: this checkout's Rollbot.rollback does "
            "not roll a fleet back yet, so rollbot's figures must be taken once it does")
    canary = fleet.hosts[0].name
    return Timing(total=took, canary=span([s for s in outcome.steps if s.host == canary]),
                  batch=span([s for s in outcome.steps if s.host != canary]))


def bench_runbook(fleet: Fleet) -> Runbook:
    sandbox_book = load_runbook(Path(os.environ.get("ROLLBOT_CONFIG", "rollbot.toml")))
    return fleet_runbook(sandbox_book, fleet, canary=1, batch_size=len(fleet.hosts) - 1)


def hold_sandbox() -> IO[str]:
    """Wait for other checkouts' end-to-end tests (tests/conftest.py takes the same lock);
    held until the returned file is closed (this process exits)."""
    lock = open(os.environ.get("ROLLBOT_E2E_LOCK", "/tmp/rollbot-sandbox-e2e.lock"), "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("waiting for the sandbox: another run of the end-to-end tests holds it",
              flush=True)
        fcntl.flock(lock, fcntl.LOCK_EX)
    return lock


async def rounds(fleet: Fleet, runbook: Runbook, store: Store, n: int, *, ideal_only: bool
                 ) -> tuple[list[Timing], list[Timing], str]:
    env = runbook.environments["production"]
    ideal: list[Timing] = []
    mine: list[Timing] = []
    async with httpx.AsyncClient() as client:
        bot = Rollbot(runbook=runbook, store=store, probe=HttpxProbe(client))
        for r in range(n):
            # Alternate which side goes first, so drift on a shared machine hits both alike.
            for side in (("ideal", "rollbot") if r % 2 == 0 else ("rollbot", "ideal")):
                if side == "rollbot" and ideal_only:
                    continue
                await serve_bad_release(fleet)
                if side == "ideal":
                    ideal.append(await time_ideal(env))
                    continue
                try:
                    mine.append(await time_rollbot(bot, fleet))
                except NotAFleetRun as exc:
                    return ideal, mine, str(exc)
    return ideal, mine, ""


def report(ideal: list[Timing], mine: list[Timing], problem: str, n_hosts: int) -> int:
    print(f"Fleet of {n_hosts} sandbox hosts, canary 1 then one batch of {n_hosts - 1}, "
          f"simple procedure {BAD} → {GOOD}")
    for name, runs in (("ideal script", ideal), ("rollbot", mine)):
        if not runs:
            continue
        totals = [t.total for t in runs]
        print(f"  {name:<14} median {statistics.median(totals):6.2f} s   (runs: "
              f"{', '.join(f'{x:.2f}' for x in totals)})")
        canary = statistics.median(t.canary for t in runs)
        batch = statistics.median(t.batch for t in runs)
        rest = statistics.median(t.total - t.canary - t.batch for t in runs)
        print(f"  {'':<14} canary {canary:.2f} s, batch of {n_hosts - 1} {batch:.2f} s, "
              f"the rest (connect, pre-flight, between, records) {rest:.2f} s")
    if mine:
        pairs = [m.total / i.total for m, i in zip(mine, ideal, strict=False)]
        print(f"  rollbot / ideal = {statistics.median(pairs):.2f} (median of per-round "
              f"ratios {', '.join(f'{p:.2f}' for p in pairs)}; target ≤ {TARGET_RATIO})")
    if problem:
        print(f"  rollbot: not measured: {problem}")
        return 1
    return 0


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="rounds (each times both sides)")
    ap.add_argument("--ideal-only", action="store_true",
                    help="time only the ideal script (rollbot's side skipped)")
    args = ap.parse_args()
    lock = hold_sandbox()
    production = await asyncio.to_thread(Sandbox.start)
    fleet = Fleet(production, HOSTS)
    base = Path(tempfile.mkdtemp(prefix="rollbot-bench-fleet-"))
    os.chmod(base, 0o755)
    pg = EmbeddedPostgres(base)
    store: Store | None = None
    try:
        await asyncio.to_thread(fleet.up)
        store = await Store.open(await asyncio.to_thread(pg.start))
        ideal, mine, problem = await rounds(fleet, bench_runbook(fleet), store, args.runs,
                                            ideal_only=args.ideal_only)
    finally:
        if store is not None:
            await store.close()
        await asyncio.to_thread(pg.stop)
        await asyncio.to_thread(fleet.down)
        lock.close()
    return report(ideal, mine, problem, len(HOSTS))


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
