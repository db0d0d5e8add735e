"""Benchmark: rollbot's safety dump and restore against the plain pipelines, on the sandbox host.

A database of 1.2 M rows (``bench_prod`` in the sandbox's PostgreSQL, built once and kept) is
dumped by rollbot's safety-backup command (pg_dump | gzip, verified in the same pass, renamed)
and by the plain ``pg_dump | gzip > f``; a dump of it is restored by rollbot's restore command
(one transaction, ON_ERROR_STOP) and by the plain ``gunzip < f | psql``. The two alternate in
every round on the same SSH connection; medians and ratios are printed. Rollbot's commands go
through its SSH edge (``timeout`` wrapper included); the plain ones through a bare exec channel.
Run it with ``./run bench`` (after Procedure 1) or ``./run bench-db``.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import shlex
import statistics
import time
from collections.abc import Awaitable
from pathlib import Path

from bot.config import DatabaseConfig, load_runbook
from bot.edges.ssh import SshHost
from bot.procedures import commands as cmd
from bot.shell import with_prefix

BENCH_DB = "bench_prod"
SCRATCH_DB = "scratch_bench_restore"  # `sandbox reset` drops it, like any scratch database
DATA_VERSION = "1"  # bump when the data below changes: the cached database is rebuilt
USERS, ORDERS = 200_000, 1_000_000
BUILD_SQL = f"""
SELECT setseed(0.42);
CREATE TABLE users (id serial PRIMARY KEY, email text NOT NULL, created_at timestamptz NOT NULL);
INSERT INTO users (email, created_at)
  SELECT 'user' || g || '@azora.world', '2026-01-01'::timestamptz + g * interval '1 minute'
  FROM generate_series(1, {USERS}) g;
CREATE TABLE orders (id serial PRIMARY KEY, user_id int NOT NULL, total numeric NOT NULL,
                     discount numeric NOT NULL, note text);
INSERT INTO orders (user_id, total, discount, note)
  SELECT 1 + g % {USERS}, round((random() * 200)::numeric, 2), round((random() * 5)::numeric, 2),
         CASE WHEN g % 7 = 0 THEN 'gift wrap, order ' || md5(g::text) END
  FROM generate_series(1, {ORDERS}) g;
CREATE INDEX orders_user ON orders (user_id);
CREATE TABLE migrations (id serial PRIMARY KEY, name text, executed_at timestamptz);
INSERT INTO migrations (name, executed_at) VALUES ('001_create_users', '2026-09-01'),
  ('002_create_orders', '2026-09-10'), ('003_add_orders_discount', '2026-09-20');
CREATE TABLE bench_meta (version text NOT NULL);
INSERT INTO bench_meta VALUES ('{DATA_VERSION}');
"""


def psql(db: DatabaseConfig, database: str, sql: str) -> str:
    return with_prefix(db.psql, "-v", "ON_ERROR_STOP=1", "-q", "-At", "-d", database, "-c", sql)


async def ensure_bench_database(host: SshHost, db: DatabaseConfig) -> None:
    """Build ``bench_prod`` once; later runs reuse it (its data version is checked)."""
    check = psql(db, "postgres", f"SELECT 1 FROM pg_database WHERE datname = '{BENCH_DB}'")
    if (await host.run(check, timeout=60)).output.strip() == "1":
        version = await host.run(psql(db, BENCH_DB, "SELECT version FROM bench_meta"),
                                 timeout=60, check=False)
        if version.exit_status == 0 and version.output.strip() == DATA_VERSION:
            return
        await host.run(psql(db, "postgres", f"DROP DATABASE {BENCH_DB} WITH (FORCE)"),
                       timeout=120)
    print(f"building {BENCH_DB}: {USERS + ORDERS:,} rows (once; kept for later runs)")
    started = time.monotonic()
    await host.run(psql(db, "postgres", f"CREATE DATABASE {BENCH_DB}"), timeout=60)
    build = with_prefix(db.psql, "-v", "ON_ERROR_STOP=1", "-q", "-d", BENCH_DB)
    await host.run(f"{build} <<'SQL'\n{BUILD_SQL}\nSQL", timeout=1800)
    await host.run(psql(db, BENCH_DB, "VACUUM ANALYZE"), timeout=600)
    print(f"  built in {time.monotonic() - started:.0f} s")


async def count_rows(host: SshHost, db: DatabaseConfig, database: str) -> int:
    sql = "SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM orders)"
    return int((await host.run(psql(db, database, sql), timeout=120)).output.strip())


async def plain(host: SshHost, command: str) -> None:
    """The baseline: a bare exec channel on the same connection, no wrapper, no capture."""
    result = await host.connection.run(command, check=False)
    if result.exit_status != 0:
        raise SystemExit(f"baseline failed ({result.exit_status}): {command}\n"
                         f"{result.stderr!r}")


async def timed(work: Awaitable[object]) -> float:
    """Wall time of ``work`` (a coroutine not started yet: it starts when awaited)."""
    started = time.monotonic()
    await work
    return time.monotonic() - started


async def bench(rounds: int) -> None:
    runbook = load_runbook(Path(os.environ.get("ROLLBOT_CONFIG", "rollbot.toml")))
    env = runbook.environments["production"]
    assert env.database is not None
    db = env.database
    dump_db = db.model_copy(update={"name": BENCH_DB})
    restore_db = db.model_copy(update={"name": SCRATCH_DB})
    async with SshHost(env.ssh) as host:
        await ensure_bench_database(host, db)
        rows = await count_rows(host, db, BENCH_DB)
        assert rows >= 1_000_000, f"{BENCH_DB} has only {rows} rows"
        work = (await host.run("mktemp -d /tmp/rollbot-bench.XXXXXX", timeout=30)).output.strip()
        q = shlex.quote
        mine_dump: list[float] = []
        plain_dump: list[float] = []
        mine_restore: list[float] = []
        plain_restore: list[float] = []
        checks: list[float] = []
        try:
            dump = f"{work}/{BENCH_DB}.sql.gz"
            await plain(host, f"{with_prefix(db.pg_dump, BENCH_DB)} | gzip > {q(dump)}")
            size = (await host.run(f"stat -c %s {q(dump)}", timeout=30)).output.strip()
            # Each timed run starts from the same state: an empty database, no dirty buffers
            # from the previous run waiting for a checkpoint (both sides get the same).
            recreate = (psql(db, "postgres", f"DROP DATABASE IF EXISTS {SCRATCH_DB} WITH (FORCE)")
                        + " && " + psql(db, "postgres", f"CREATE DATABASE {SCRATCH_DB}")
                        + " && " + psql(db, "postgres", "CHECKPOINT"))
            checkpoint = psql(db, "postgres", "CHECKPOINT")
            for r in range(rounds):
                # The safety dump: rollbot's command and the plain pipeline, order alternating.
                ours = f"{work}/{BENCH_DB}_pre-restore_{r}.sql.gz"
                theirs = f"{work}/plain_{r}.sql.gz"
                dumps = [(mine_dump, host.run(cmd.safety_backup(dump_db, ours), timeout=1800)),
                         (plain_dump, plain(host, f"{with_prefix(db.pg_dump, BENCH_DB)} | gzip "
                                                  f"> {q(theirs)}"))]
                for into, work_ in dumps if r % 2 == 0 else reversed(dumps):
                    await host.run(checkpoint, timeout=120)
                    into.append(await timed(work_))
                await host.run(f"rm -f {q(ours)} {q(theirs)}", timeout=60)
                # The restore into an empty database, same alternation.
                plain_psql = with_prefix(db.psql, "-q", "-d", SCRATCH_DB)
                restores = [(mine_restore, host.run(cmd.restore_from(restore_db, dump),
                                                    timeout=1800)),
                            (plain_restore, plain(host, f"gunzip < {q(dump)} | {plain_psql} "
                                                        "> /dev/null"))]
                for into, work_ in restores if r % 2 == 0 else reversed(restores):
                    await host.run(recreate, timeout=120)
                    into.append(await timed(work_))
                checks.append(await timed(host.run(cmd.verify_backup_integrity(dump),
                                                   timeout=1800)))
                restored = await count_rows(host, db, SCRATCH_DB)
                assert restored == rows, f"restored {restored} rows of {rows}"
                print(f"  round {r + 1}/{rounds}: dump {mine_dump[-1]:.2f} / "
                      f"{plain_dump[-1]:.2f} s, restore {mine_restore[-1]:.2f} / "
                      f"{plain_restore[-1]:.2f} s (rollbot / plain)", flush=True)
        finally:
            await host.run(f"rm -rf {q(work)}; "
                           + psql(db, "postgres", f"DROP DATABASE IF EXISTS {SCRATCH_DB}"),
                           timeout=120, check=False)
    md, pd = statistics.median(mine_dump), statistics.median(plain_dump)
    mr, pr = statistics.median(mine_restore), statistics.median(plain_restore)
    mc = statistics.median(checks)
    # Each round's two runs share its conditions (2 shared cores): the median of the per-round
    # ratios is the figure; the ratio of the medians is printed beside it.
    dump_ratios = [m / p for m, p in zip(mine_dump, plain_dump, strict=True)]
    restore_ratios = [m / p for m, p in zip(mine_restore, plain_restore, strict=True)]
    print(f"Safety dump and restore of {BENCH_DB} ({rows:,} rows, dump "
          f"{int(size) / 1e6:.1f} MB gzip), median of {rounds} rounds")
    print(f"  safety dump: rollbot {md:6.2f} s  plain `pg_dump | gzip > f` {pd:6.2f} s  "
          f"ratio {statistics.median(dump_ratios):.2f} (of medians {md / pd:.2f})   "
          f"(target ≤ 1.10)")
    print(f"  restore:     rollbot {mr:6.2f} s  plain `gunzip < f | psql`  {pr:6.2f} s  "
          f"ratio {statistics.median(restore_ratios):.2f} (of medians {mr / pr:.2f})   "
          f"(target ≤ 1.10)")
    print(f"  per round, dump:    {', '.join(f'{x:.2f}' for x in dump_ratios)}")
    print(f"  per round, restore: {', '.join(f'{x:.2f}' for x in restore_ratios)}")
    print(f"  backup integrity check (one read, before a restore): {mc:.2f} s "
          f"= {mc / pr:.2f} of the plain restore")


# The end-to-end tests' machine-wide lock on the sandbox (tests/conftest.py): a test's `sandbox
# reset` drops the scratch database mid-restore, and the bench's load would skew the tests.
E2E_LOCK = Path(os.environ.get("ROLLBOT_E2E_LOCK", "/tmp/rollbot-sandbox-e2e.lock"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    with E2E_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        asyncio.run(bench(args.rounds))


if __name__ == "__main__":
    main()
