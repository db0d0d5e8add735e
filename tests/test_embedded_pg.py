"""The embedded PostgreSQL: a real cluster from the machine's binaries, in a throwaway directory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from bot.errors import ConfigError, StoreError
from bot.store import pg_access, pg_binaries
from bot.store.embedded_pg import EmbeddedPostgres
from bot.store.pg_binaries import PgBinaries
from tests.fleet import free_port

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


def _server_uid() -> int:
    """The uid the server runs as: 'postgres' when the tests run as root."""
    return pwd.getpwnam("postgres").pw_uid if os.geteuid() == 0 else os.geteuid()


def _tcp_listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on, from its sockets and /proc/net/tcp{,6}."""
    fd_dir = Path(f"/proc/{pid}/fd")
    inodes = {os.readlink(fd)[8:-1] for fd in fd_dir.iterdir()
              if os.readlink(fd).startswith("socket:[")}
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


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
    assert dsn == pg_access.dsn(pg.sock_dir)
    assert dsn.startswith("postgresql://rollbot@%2F") and dsn.endswith(":5432/rollbot")
    assert pg.dsn == dsn
    assert pg.is_running()
    assert await _select_1(dsn) == 1
    assert (pg.root / "pgdata").is_dir()
    assert (pg.root / "postgres.log").is_file()


async def test_the_cluster_listens_on_a_short_private_socket_only(pg: EmbeddedPostgres) -> None:
    dsn = pg.start()
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        assert await conn.fetchval("SHOW listen_addresses") == ""
        assert await conn.fetchval("SHOW fsync") == "on"
        assert await conn.fetchval("SELECT current_user") == "rollbot"
    finally:
        await conn.close()
    # postmaster.pid: line 5 the socket directory, line 6 the TCP address (none).
    assert (pg.data_dir / "postmaster.pid").read_text().splitlines()[4:6] == [
        str(pg.sock_dir), ""]
    # Nothing of the server's listens on TCP, on any address or port.
    assert _tcp_listening_ports(_postmaster_pid(pg)) == set()
    # The socket directory is short, private and the server owner's, outside the data directory.
    st = os.lstat(pg.sock_dir)
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
    assert st.st_uid == _server_uid()
    assert len(os.fsencode(pg.sock_dir / ".s.PGSQL.5432")) <= 107
    assert pg.root not in pg.sock_dir.parents
    hba = (pg.data_dir / "pg_hba.conf").read_text()
    rules = [line.split() for line in hba.splitlines() if line and not line.startswith("#")]
    assert rules == [["local", "all", "all", "peer", "map=rollbot"]]


async def test_rollbots_role_is_no_superuser_and_cannot_run_programs(
    pg: EmbeddedPostgres,
) -> None:
    dsn = pg.start()
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        assert await conn.fetchval(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user") is False
        assert await conn.fetchval(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'rollbot'"
        ) == "rollbot"
        # What a superuser could do to read the SSH key or run commands as the server:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("COPY (SELECT 1) TO PROGRAM 'id'")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetchval("SELECT pg_read_file('/etc/passwd')")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("ALTER ROLE rollbot SUPERUSER")
        # What it needs: its own tables (and, for the tests' per-test databases, CREATEDB).
        await conn.execute("DROP TABLE IF EXISTS mine; CREATE TABLE mine (id serial, v text)")
        await conn.execute("INSERT INTO mine (v) VALUES ('audit')")
    finally:
        await conn.close()


async def test_other_roles_and_other_os_users_are_refused(pg: EmbeddedPostgres) -> None:
    pg.start()
    host = str(pg.sock_dir)
    # The same OS user, asking for the superuser: peer authentication maps it to rollbot only.
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError,
                       match="Peer authentication failed"):
        await asyncpg.connect(host=host, port=5432, user="postgres", database="postgres",
                              timeout=10)
    # A role that does not exist, a password offered instead: still refused.
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
        await asyncpg.connect(host=host, port=5432, user="intruder", password="x",
                              database="rollbot", timeout=10)
    if os.geteuid() == 0:
        # Another local account cannot even reach the socket.
        psql = pg.bin_dir / "psql"
        done = subprocess.run(
            ["runuser", "-u", "nobody", "--", str(psql), "-X", "-h", host, "-p", "5432",
             "-U", "rollbot", "-d", "rollbot", "-c", "SELECT 1"],
            capture_output=True, text=True, timeout=30, check=False, cwd="/",
        )
        assert done.returncode != 0
        assert "Permission denied" in done.stderr


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


@pytest.mark.parametrize("kind", ["open", "symlink", "foreign"])
def test_a_socket_dir_that_is_not_private_is_refused(base_dir: Path, kind: str) -> None:
    pg = EmbeddedPostgres(base_dir / f"squatted-{kind}")
    sock_dir = pg.sock_dir  # predictable: another account could make it first
    elsewhere = base_dir / f"elsewhere-{kind}"
    elsewhere.mkdir(mode=0o700)
    try:
        if kind == "open":
            sock_dir.mkdir()
            sock_dir.chmod(0o755)
            os.chown(sock_dir, _server_uid(), -1)
            expected = "has mode 0755, not 0700"
        elif kind == "symlink":
            sock_dir.symlink_to(elsewhere)
            expected = "is a symbolic link"
        else:
            if os.geteuid() != 0:
                pytest.fail("needs root to make a directory of another user")
            sock_dir.mkdir(mode=0o700)
            os.chown(sock_dir, pwd.getpwnam("nobody").pw_uid, -1)
            expected = "belongs to uid"
        with pytest.raises(ConfigError, match=expected) as caught:
            pg.start()
        assert f"remove it (rm -r {sock_dir})" in str(caught.value)
        assert not pg.is_running()
    finally:
        if sock_dir.is_symlink():
            sock_dir.unlink()
        else:
            shutil.rmtree(sock_dir, ignore_errors=True)


async def test_a_data_dir_200_characters_deep_works(base_dir: Path) -> None:
    deep = base_dir / "deep"
    while len(str(deep)) < 210:
        deep = deep / "a-rather-long-directory-name"
    pg = EmbeddedPostgres(deep / ".rollbot")
    assert len(str(pg.data_dir)) > 200
    try:
        dsn = pg.start()
        assert await _select_1(dsn) == 1
        assert EmbeddedPostgres(deep / ".rollbot").start() == dsn
    finally:
        _force_stop(pg)


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


def test_the_dsn_is_known_before_the_first_start(base_dir: Path) -> None:
    pg = EmbeddedPostgres(base_dir / "unstarted")
    assert pg.dsn == pg_access.dsn(pg.sock_dir)
    assert not (base_dir / "unstarted").exists()


# --- binaries, without a server ----------------------------------------------------------------


def _fake_install(root: Path, versions: list[str]) -> None:
    for version in versions:
        bin_dir = root / version / "bin"
        bin_dir.mkdir(parents=True)
        for tool in ("initdb", "pg_ctl", "pg_isready", "psql"):
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
@pytest.mark.parametrize("runtime_dir", [False, True], ids=["temp-dir", "xdg-runtime-dir"])
def test_not_root_runs_the_binaries_directly(runtime_dir: bool) -> None:
    python = _system_python_for_postgres()
    if python is None or shutil.which("runuser") is None:
        pytest.fail("no Python >= 3.11 that the postgres user can run (install python3)")
    base = _make_base_dir()
    base.chmod(0o777)
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "TMPDIR")}
    if runtime_dir:
        xdg = base / "run-user"
        xdg.mkdir(mode=0o700)
        os.chown(xdg, pwd.getpwnam("postgres").pw_uid, -1)
        env["XDG_RUNTIME_DIR"] = str(xdg)
    script = textwrap.dedent(f"""
        import subprocess, sys
        sys.path.insert(0, {str(REPO)!r})
        from pathlib import Path
        from bot.store.embedded_pg import EmbeddedPostgres
        pg = EmbeddedPostgres(Path({str(base / "pg")!r}))
        try:
            print(pg.start())
            print(pg.start())
            print(pg.sock_dir)
            print(subprocess.run([str(pg.bin_dir / "psql"), "-X", "-A", "-t", "-d", pg.dsn,
                                  "-c", "SELECT current_user || '/' || rolsuper FROM pg_roles"
                                        " WHERE rolname = current_user"],
                                 capture_output=True, text=True, check=True).stdout.strip())
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
            env=env,
        )
        assert done.returncode == 0, done.stderr
        first, second, sock_dir, who, running = done.stdout.split()
        assert first == second == pg_access.dsn(Path(sock_dir))
        if runtime_dir:
            assert Path(sock_dir).parent == base / "run-user"
        else:
            uid = pwd.getpwnam("postgres").pw_uid
            assert Path(sock_dir).name.startswith(f"rollbot-{uid}-")
        assert who == "rollbot/false"
        assert running == "False"
    finally:
        # Should the child have died before its stop(), kill its server, by its own PID.
        pid_file = base / "pg" / "pgdata" / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            os.kill(int(pid_file.read_text().splitlines()[0]), signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)


# --- a cluster made by an older rollbot ----------------------------------------------------------


def _old_layout_cluster(root: Path, *, tcp_port: int) -> PgBinaries:
    """A running cluster as rollbot made them before: superuser 'rollbot', trust, TCP."""
    data, sock = root / "pgdata", root / "pgsock"
    for d in (data, sock):
        d.mkdir(parents=True, mode=0o700)
        if os.geteuid() == 0:
            pg_binaries.chown_tree(d, pg_binaries.system_user())
    log_file = root / "postgres.log"
    log_file.touch()
    if os.geteuid() == 0:
        os.chown(log_file, pg_binaries.system_user().pw_uid, -1)
    tools = PgBinaries(pg_binaries.find_bin_dir(None, data), cwd=root, log_file=log_file)

    def run(tool: str, *args: str) -> None:
        done = tools.run(tool, list(args), timeout=120)
        assert done.returncode == 0, done.output

    run("initdb", "-D", str(data), "-U", "rollbot", "--auth=trust", "--no-locale")
    (data / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
    options = f"-p {tcp_port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={sock}"
    run("pg_ctl", "start", "-D", str(data), "-l", str(log_file), "-w", "-o", options)
    (root / "port").write_text(f"{tcp_port}\n")
    conn = ["-h", "127.0.0.1", "-p", str(tcp_port), "-U", "rollbot"]
    run("createdb", *conn, "rollbot")
    run("psql", "-X", "-v", "ON_ERROR_STOP=1", *conn, "-d", "rollbot", "-c", """
        CREATE TYPE mood AS ENUM ('calm', 'busy');
        CREATE TABLE runs (id serial PRIMARY KEY, mood mood, reason text);
        CREATE FUNCTION run_count() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM runs';
        INSERT INTO runs (mood, reason) VALUES ('busy', 'bad deploy');
    """)
    return tools


async def test_a_cluster_from_an_older_rollbot_is_upgraded_in_place(base_dir: Path) -> None:
    root = base_dir / "old-layout"
    tools = _old_layout_cluster(root, tcp_port=free_port())
    pg = EmbeddedPostgres(root)
    try:
        # Still running as the old rollbot left it, open on TCP: refused, and left alone.
        with pytest.raises(StoreError, match=r"older rollbot's settings .* Stop it"):
            pg.start()
        assert pg.is_running()
        stopped = tools.run("pg_ctl", ["stop", "-D", str(pg.data_dir), "-m", "fast", "-w"],
                            timeout=60)
        assert stopped.returncode == 0, stopped.output

        dsn = pg.start()
        assert _tcp_listening_ports(_postmaster_pid(pg)) == set()
        assert not (root / "port").exists()
        assert "trust" not in (pg.data_dir / "pg_hba.conf").read_text()
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            assert await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = 'rollbot'"
                                       ) is False
            assert await conn.fetchval("SELECT rolname FROM pg_roles WHERE oid = 10"
                                       ) == "postgres"
            assert await conn.fetchval(
                "SELECT count(*) FROM pg_roles WHERE rolname = 'rollbot_upgrading'") == 0
            # The audit trail is still there, and rollbot still owns and writes it.
            assert await conn.fetchval("SELECT reason FROM runs") == "bad deploy"
            await conn.execute("INSERT INTO runs (mood, reason) VALUES ('calm', 'again')")
            assert await conn.fetchval("SELECT run_count()") == 2
            await conn.execute("ALTER TABLE runs ADD COLUMN note text")  # owners may
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("COPY (SELECT 1) TO PROGRAM 'id'")
        finally:
            await conn.close()
        # Later starts find the new layout and change nothing.
        pg.stop()
        assert EmbeddedPostgres(root).start() == dsn
        assert await _select_1(dsn) == 1
    finally:
        _force_stop(pg)
