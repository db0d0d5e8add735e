"""Fixtures: the sandbox production host, a throwaway PostgreSQL for rollbot, the service."""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from bot.config import Runbook, load_runbook
from bot.edges.http import HttpxProbe
from bot.service import Rollbot
from bot.store.embedded_pg import EmbeddedPostgres
from bot.store.runs import Store
from tests.sandbox import Sandbox

# The sandbox is one production host on this machine: two pytest sessions (say, two checkouts)
# that drive it at once would reset it under each other. The second waits for the first.
E2E_LOCK = Path(os.environ.get("ROLLBOT_E2E_LOCK", "/tmp/rollbot-sandbox-e2e.lock"))


@pytest.fixture(scope="session")
def sandbox_host() -> Iterator[Sandbox]:
    with E2E_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield Sandbox.start()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture
def production(sandbox_host: Sandbox) -> Sandbox:
    """Production as the incident finds it: v1.2.3 running (unhealthy), data and backups seeded."""
    sandbox_host.reset()
    return sandbox_host


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[str]:
    """rollbot's own database server for the tests, in a throwaway directory."""
    base = Path(tempfile.mkdtemp(prefix="rollbot-test-pg-"))
    os.chmod(base, 0o755)  # the postgres user must traverse it when the tests run as root
    pg = EmbeddedPostgres(base)
    try:
        yield pg.start()
    finally:
        pg.stop()
        # Each test's database stays in the cluster (1-2 GB after a full run): remove it all.
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
async def store(pg_cluster: str) -> AsyncIterator[Store]:
    """A fresh database per test: no test depends on another's runs."""
    name = f"t_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(pg_cluster)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    s = await Store.open(pg_cluster.rsplit("/", 1)[0] + "/" + name)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def runbook(production: Sandbox) -> Runbook:
    return load_runbook(production.runbook)


@pytest.fixture
async def rollbot(runbook: Runbook, store: Store) -> AsyncIterator[Rollbot]:
    async with httpx.AsyncClient() as client:
        yield Rollbot(runbook=runbook, store=store, probe=HttpxProbe(client))
