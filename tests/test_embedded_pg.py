"""The embedded PostgreSQL: a real cluster from the machine's binaries, in a throwaway directory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from bot.errors import ConfigError, StoreError
from bot.store import pg_binaries
from bot.store.embedded_pg import EmbeddedPostgres

REPO = Path(__file__).resolve().parents[1]


def _make_base_dir() -> Path:
    # pytest's tmp_path is 0700 under /tmp/pytest-of-root/, which the 'postgres' user (used when
    # the tests run as root) cannot traverse; mkdtemp under world-traversable /tmp, opened up.
    base = Path(tempfile.mkdtemp(prefix="rollbot-pg-test-"))
    base.chmod(0o755)
    return base


def _postmaster_pid(pg: EmbeddedPostgres) -> int:
    return int((pg.data_dir / "postmaster.pid").read_text().splitlines()[0])


def _force_stop(pg: EmbeddedPostgres) -> None:
    """Stop the cluster, by SIGKILL if a clean stop fails, so no server outlives the tests."""
    try:
        pg.stop()
    except Exception:
        with contextlib.suppress(OSError, ValueError, IndexError):
            os.kill(_postmaster_pid(pg), signal.SIGKILL)
        raise


def _wait_until_stopped(pg: EmbeddedPostgres, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while pg.is_running():
        assert time.monotonic() < deadline, "postmaster still alive"
        time.sleep(0.05)


async def _select_1(dsn: str) -> int:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        value: int = await conn.fetchval("SELECT 1")
        return value
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def base_dir() -> Iterator[Path]:
    base = _make_base_dir()
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def pg(base_dir: Path) -> Iterator[EmbeddedPostgres]:
    """One cluster for the module; each test starts it itself, since start() is idempotent."""
    cluster = EmbeddedPostgres(base_dir / "cluster")  # ConfigError fails loudly, never skips
    try:
        yield cluster
    finally:
        _force_stop(cluster)


async def test_start_gives_a_dsn_that_asyncpg_can_use(pg: EmbeddedPostgres) -> None:
    dsn = pg.start()
    port = (pg.root / "port").read_text().strip()
    assert dsn == f"postgresql://rollbot@127.0.0.1:{port}/rollbot"
    assert pg.dsn == dsn
    assert pg.is_running()
    assert await _select_1(dsn) == 1
    for name in ("pgdata", "pgsock"):
        assert (pg.root / name).is_dir()
    assert (pg.root / "postgres.log").is_file()


async def test_the_cluster_is_reachable_only_on_loopback(pg: EmbeddedPostgres) -> None:
    dsn = pg.start()
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        assert await conn.fetchval("SHOW listen_addresses") == "127.0.0.1"
        assert await conn.fetchval("SHOW unix_socket_directories") == str(pg.sock_dir)
        assert await conn.fetchval("SHOW fsync") == "on"
        assert await conn.fetchval("SELECT current_user") == "rollbot"
    finally:
        await conn.close()
    hba = (pg.data_dir / "pg_hba.conf").read_text()
    rules = [line.split() for line in hba.splitlines() if line and not line.startswith("#")]
    assert rules == [
        ["local", "all", "all", "trust"],
        ["host", "all", "all", "127.0.0.1/32", "trust"],
    ]


def test_start_twice_is_idempotent_and_keeps_the_port(pg: EmbeddedPostgres) -> None:
    dsn = pg.start()
    pid = _postmaster_pid(pg)
    assert pg.start() == dsn
    # A new instance (as after a rollbot restart) finds the running cluster and its port.
    assert EmbeddedPostgres(pg.root).start() == dsn
    assert _postmaster_pid(pg) == pid


async def test_stop_then_start_keeps_data_and_port(pg: EmbeddedPostgres) -> None:
    dsn = pg.start()
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute("DROP TABLE IF EXISTS kept; CREATE TABLE kept (v text)")
        await conn.execute("INSERT INTO kept VALUES ('audit')")
    finally:
        await conn.close()
    pg.stop()
    assert not pg.is_running()
    assert EmbeddedPostgres(pg.root).start() == dsn
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        assert await conn.fetchval("SELECT v FROM kept") == "audit"
    finally:
        await conn.close()


def test_stop_is_idempotent(pg: EmbeddedPostgres, base_dir: Path) -> None:
    pg.start()
    pg.stop()
    pg.stop()
    assert not pg.is_running()
    # A directory that never held a cluster: nothing to stop, nothing created.
    never = EmbeddedPostgres(base_dir / "never")
    never.stop()
    assert not never.is_running()
    assert not (base_dir / "never").exists()


async def test_start_after_sigkill_of_the_postmaster(pg: EmbeddedPostgres) -> None:
    dsn = pg.start()
    os.kill(_postmaster_pid(pg), signal.SIGKILL)
    _wait_until_stopped(pg)
    # The crashed server leaves postmaster.pid (and the socket lock) behind.
    assert (pg.data_dir / "postmaster.pid").exists()
    assert pg.start() == dsn
    assert pg.is_running()
    assert await _select_1(dsn) == 1


async def test_start_waits_for_orphaned_backends_of_a_killed_postmaster(
    pg: EmbeddedPostgres,
) -> None:
    dsn = pg.start()
    conn = await asyncpg.connect(dsn, timeout=10)
    # A busy loop does not look for postmaster death, so this backend outlives the postmaster
    # for about 2 s and keeps its shared memory, which makes PostgreSQL refuse to start.
    busy = asyncio.create_task(
        conn.execute(
            "DO $$ BEGIN WHILE clock_timestamp() < now() + interval '2 s' LOOP END LOOP; END $$"
        )
    )
    try:
        await asyncio.sleep(0.3)
        log_size = pg.log_file.stat().st_size
        os.kill(_postmaster_pid(pg), signal.SIGKILL)
        _wait_until_stopped(pg)
        assert await asyncio.to_thread(pg.start) == dsn
    finally:
        with contextlib.suppress(Exception):
            await busy
        conn.terminate()
    with pg.log_file.open("rb") as f:
        f.seek(log_size)
        assert b"pre-existing shared memory block" in f.read()
    assert await _select_1(dsn) == 1


async def test_start_when_postmaster_pid_names_an_unrelated_live_process(
    pg: EmbeddedPostgres,
) -> None:
    # After a reboot, the PID in a stale postmaster.pid may belong to another live process.
    dsn = pg.start()
    pid_file = pg.data_dir / "postmaster.pid"
    lines = pid_file.read_text().splitlines()
    pg.stop()
    pid_file.write_text("\n".join([str(os.getpid()), *lines[1:]]) + "\n")
    assert not pg.is_running()
    assert pg.start() == dsn
    assert _postmaster_pid(pg) != os.getpid()
    assert await _select_1(dsn) == 1


async def test_a_taken_remembered_port_is_replaced(pg: EmbeddedPostgres) -> None:
    old_dsn = pg.start()
    old_port = int((pg.root / "port").read_text())
    pg.stop()
    with socket.socket() as squatter:
        # Our own closed connections may still hold the port in TIME_WAIT.
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", old_port))
        squatter.listen()
        new_dsn = EmbeddedPostgres(pg.root).start()
    new_port = int((pg.root / "port").read_text())
    assert new_port != old_port
    assert new_dsn == old_dsn.replace(f":{old_port}/", f":{new_port}/")
    assert await _select_1(new_dsn) == 1


def test_a_taken_requested_port_is_a_store_error(pg: EmbeddedPostgres) -> None:
    pg.start()
    pg.stop()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        with pytest.raises(StoreError, match=f"Port {taken} .* already in use"):
            EmbeddedPostgres(pg.root, port=taken).start()
    assert not pg.is_running()


def test_a_failed_start_quotes_the_log(pg: EmbeddedPostgres) -> None:
    pg.start()
    pg.stop()
    auto_conf = pg.data_dir / "postgresql.auto.conf"
    original = auto_conf.read_text()
    try:
        # Rewritten in place, so the file keeps its owner.
        auto_conf.write_text(original + "shared_buffers = 'plenty'\n")
        with pytest.raises(StoreError) as caught:
            pg.start()
    finally:
        auto_conf.write_text(original)
    message = str(caught.value)
    assert message.startswith("pg_ctl could not start the embedded PostgreSQL")
    assert f"Last lines of {pg.log_file}:" in message
    assert "shared_buffers" in message
    pg.start()
    assert pg.is_running()


def test_dsn_before_any_start_is_a_store_error(base_dir: Path) -> None:
    with pytest.raises(StoreError, match="start it first"):
        _ = EmbeddedPostgres(base_dir / "unstarted").dsn
    assert EmbeddedPostgres(base_dir / "unstarted", port=54329).dsn.endswith(":54329/rollbot")


# --- binaries, without a server ----------------------------------------------------------------


def _fake_install(root: Path, versions: list[str]) -> None:
    for version in versions:
        bin_dir = root / version / "bin"
        bin_dir.mkdir(parents=True)
        for tool in ("initdb", "pg_ctl", "pg_isready", "createdb", "psql"):
            (bin_dir / tool).write_text("#!/bin/sh\n")
            (bin_dir / tool).chmod(0o755)


def test_missing_binaries_are_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ROLLBOT_PG_BIN", raising=False)
    monkeypatch.setattr(pg_binaries, "_PG_ROOT", tmp_path / "nothing")
    with pytest.raises(ConfigError, match=r"PostgreSQL server binaries not found.*DATABASE_URL"):
        EmbeddedPostgres(tmp_path / "pg")
    monkeypatch.setenv("ROLLBOT_PG_BIN", str(tmp_path))
    with pytest.raises(ConfigError, match="lacks initdb, pg_ctl"):
        EmbeddedPostgres(tmp_path / "pg")
    with pytest.raises(ConfigError, match="not found"):
        EmbeddedPostgres(tmp_path / "pg", bin_dir=tmp_path / "empty")


def test_binaries_newest_or_matching_the_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install = tmp_path / "usr-lib-postgresql"
    _fake_install(install, ["9.6", "15", "16"])
    (install / "17").mkdir()  # a version without its server package
    monkeypatch.delenv("ROLLBOT_PG_BIN", raising=False)
    monkeypatch.setattr(pg_binaries, "_PG_ROOT", install)
    assert EmbeddedPostgres(tmp_path / "new").bin_dir == install / "16" / "bin"
    (tmp_path / "old" / "pgdata").mkdir(parents=True)
    (tmp_path / "old" / "pgdata" / "PG_VERSION").write_text("15\n")
    assert EmbeddedPostgres(tmp_path / "old").bin_dir == install / "15" / "bin"
    monkeypatch.setenv("ROLLBOT_PG_BIN", str(install / "9.6" / "bin"))
    assert EmbeddedPostgres(tmp_path / "old").bin_dir == install / "9.6" / "bin"


def test_unsafe_root_paths_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot pass safely"):
        EmbeddedPostgres(tmp_path / 'a"b')
    with pytest.raises(ConfigError, match="too deep"):
        EmbeddedPostgres(tmp_path / ("x" * 120))
    with pytest.raises(ConfigError, match="between 1 and 65535"):
        EmbeddedPostgres(tmp_path / "pg", port=70000)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_as_root_an_untraversable_parent_is_named(tmp_path: Path) -> None:
    # tmp_path's parents are 0700 root directories: the 'postgres' user cannot get through.
    pg = EmbeddedPostgres(tmp_path / "pg")
    with pytest.raises(ConfigError, match=r"is not traversable by it; run 'chmod o\+x "):
        pg.start()
    assert not pg.is_running()


def _system_python_for_postgres() -> str | None:
    """A Python >= 3.11 that the 'postgres' user may execute (the venv's may be under /root)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if not os.access(candidate, os.X_OK):
            continue
        probe = subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                candidate,
                "-c",
                "import sys; assert sys.version_info >= (3, 11)",
            ],
            capture_output=True,
            timeout=30,
            check=False,
        )
        if probe.returncode == 0:
            return candidate
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="runs the non-root path as 'postgres' from root")
def test_not_root_runs_the_binaries_directly() -> None:
    python = _system_python_for_postgres()
    if python is None or shutil.which("runuser") is None:
        pytest.fail("no Python >= 3.11 that the postgres user can run (install python3)")
    base = _make_base_dir()
    base.chmod(0o777)
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from pathlib import Path
        from bot.store.embedded_pg import EmbeddedPostgres
        pg = EmbeddedPostgres(Path({str(base / "pg")!r}))
        try:
            print(pg.start())
            print(pg.start())
        finally:
            pg.stop()
        print(pg.is_running())
    """)
    try:
        done = subprocess.run(
            ["runuser", "-u", "postgres", "--", python, "-c", script],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=base,
        )
        assert done.returncode == 0, done.stderr
        first, second, running = done.stdout.split()
        assert first == second
        assert first.startswith("postgresql://rollbot@127.0.0.1:")
        assert running == "False"
    finally:
        # Should the child have died before its stop(), kill its server, by its own PID.
        pid_file = base / "pg" / "pgdata" / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            os.kill(int(pid_file.read_text().splitlines()[0]), signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)
