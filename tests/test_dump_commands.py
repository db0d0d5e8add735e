"""The backup checks rollbot sends, run here with bash on real gzip files: each fault is caught.

The backup integrity check reads a backup once; the safety dump is verified in the pass that
writes it. Both must still refuse a truncated, corrupt, empty or unfinished dump.
"""

from __future__ import annotations

import gzip
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from bot.config import DatabaseConfig
from bot.procedures import commands as cmd

DUMP = (
    "--\n-- PostgreSQL database dump\n--\n\nCREATE TABLE users (id integer, email text);\n"
    "COPY users (id, email) FROM stdin;\n"
    + "".join(f"{i}\tuser{i}@azora.world\n" for i in range(20000))
    + "\\.\n\n--\n-- PostgreSQL database dump complete\n--\n\n"
)
UNFINISHED = DUMP.split("\\.\n")[0]  # pg_dump killed mid-COPY: no closing line


def bash(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """What the host's shell does with the command rollbot sends."""
    return subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True,
                          timeout=60)


def write_gzip(path: Path, text: str) -> Path:
    path.write_bytes(gzip.compress(text.encode()))
    return path


@pytest.fixture
def good(tmp_path: Path) -> Path:
    return write_gzip(tmp_path / "azora_prod_good.sql.gz", DUMP)


def test_a_complete_backup_passes_in_one_read(good: Path) -> None:
    command = cmd.verify_backup_integrity(str(good))
    assert command.count("gunzip -c ") == 1 and "gunzip -t" not in command
    assert bash(command, good.parent).returncode == 0


def test_a_truncated_backup_fails(good: Path, tmp_path: Path) -> None:
    data = good.read_bytes()
    cut = tmp_path / "cut.sql.gz"
    cut.write_bytes(data[: len(data) // 2])
    out = bash(cmd.verify_backup_integrity(str(cut)), tmp_path)
    assert out.returncode != 0
    assert out.stdout.strip().endswith("gunzip failed: the file is damaged or cut short")


def test_a_corrupt_backup_fails_its_crc(good: Path, tmp_path: Path) -> None:
    data = bytearray(good.read_bytes())
    data[-6] ^= 0xFF  # inside the CRC32 trailer: decompresses fully, but the CRC is wrong
    bad = tmp_path / "crc.sql.gz"
    bad.write_bytes(bytes(data))
    out = bash(cmd.verify_backup_integrity(str(bad)), tmp_path)
    assert out.returncode != 0
    assert "gunzip failed" in out.stdout


def test_a_dump_without_its_closing_line_fails(tmp_path: Path) -> None:
    unfinished = write_gzip(tmp_path / "unfinished.sql.gz", UNFINISHED)
    out = bash(cmd.verify_backup_integrity(str(unfinished)), tmp_path)
    assert out.returncode != 0
    assert 'no "dump complete" line at its end' in out.stdout


@pytest.mark.parametrize("content", [b"", b"plain text, not gzip\n"])
def test_an_empty_or_non_gzip_file_fails(tmp_path: Path, content: bytes) -> None:
    f = tmp_path / "x.sql.gz"
    f.write_bytes(content)
    assert bash(cmd.verify_backup_integrity(str(f)), tmp_path).returncode != 0


def test_a_missing_file_fails(tmp_path: Path) -> None:
    assert bash(cmd.verify_backup_integrity(str(tmp_path / "nope.sql.gz")), tmp_path
                ).returncode != 0


# --- the safety dump -------------------------------------------------------------------------

def fake_pg_dump(tmp_path: Path, *, text: str, status: int = 0) -> DatabaseConfig:
    """A runbook whose pg_dump prints ``text`` and exits with ``status``."""
    (tmp_path / "dump.sql").write_text(text)
    script = tmp_path / "fake_pg_dump.sh"
    script.write_text(f"cat {tmp_path / 'dump.sql'}\nexit {status}\n")
    return DatabaseConfig(name="azora_prod", psql="psql", pg_dump=f"sh {script}",
                          backups_dir=str(tmp_path), backup_glob="azora_prod_*.sql.gz")


def final_path(tmp_path: Path) -> Path:
    return tmp_path / "azora_prod_pre-restore_1764200000.sql.gz"


def test_a_safety_dump_is_verified_as_it_is_written_then_renamed(tmp_path: Path) -> None:
    db = fake_pg_dump(tmp_path, text=DUMP)
    final = final_path(tmp_path)
    command = cmd.safety_backup(db, str(final))
    # written once and checked on the way (tee into gunzip): never read back from the disk
    assert "tee " in command and command.count("gunzip -c ") == 1 and "gunzip -t" not in command
    assert "pipefail" in command and ".partial" in command
    out = bash(command, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert gzip.decompress(final.read_bytes()).decode() == DUMP
    assert not Path(str(final) + ".partial").exists()


def test_a_safety_dump_whose_pg_dump_fails_is_not_kept(tmp_path: Path) -> None:
    # pipefail: pg_dump printed a whole dump, then failed; the step must fail anyway
    db = fake_pg_dump(tmp_path, text=DUMP, status=1)
    out = bash(cmd.safety_backup(db, str(final_path(tmp_path))), tmp_path)
    assert out.returncode != 0
    assert "no safety backup was made" in out.stdout
    assert not final_path(tmp_path).exists()


def test_a_safety_dump_without_its_closing_line_is_not_kept(tmp_path: Path) -> None:
    db = fake_pg_dump(tmp_path, text=UNFINISHED)
    out = bash(cmd.safety_backup(db, str(final_path(tmp_path))), tmp_path)
    assert out.returncode != 0
    assert 'no "dump complete" line at its end' in out.stdout
    assert not final_path(tmp_path).exists()


def test_an_empty_safety_dump_is_not_kept(tmp_path: Path) -> None:
    db = fake_pg_dump(tmp_path, text="")
    out = bash(cmd.safety_backup(db, str(final_path(tmp_path))), tmp_path)
    assert out.returncode != 0
    assert not final_path(tmp_path).exists()


def test_a_safety_dump_that_cannot_be_written_is_not_kept(tmp_path: Path) -> None:
    db = fake_pg_dump(tmp_path, text=DUMP)
    missing_dir = tmp_path / "no-such-dir" / "azora_prod_pre-restore_1.sql.gz"
    out = bash(cmd.safety_backup(db, str(missing_dir)), tmp_path)
    assert out.returncode != 0
    assert "no safety backup was made" in out.stdout
    assert not missing_dir.exists()


# --- the restore -----------------------------------------------------------------------------

def fake_psql(tmp_path: Path) -> tuple[DatabaseConfig, Path]:
    """A runbook whose psql keeps what it is fed (as a psql behind `docker exec -i` reads it)."""
    received = tmp_path / "received.sql"
    script = tmp_path / "fake_psql.sh"
    script.write_text(f"cat > {received}\n")
    db = DatabaseConfig(name="azora_prod", psql=f"sh {script}", pg_dump="pg_dump",
                        backups_dir=str(tmp_path), backup_glob="azora_prod_*.sql.gz")
    return db, received


def test_a_restore_commits_only_after_the_whole_backup(good: Path, tmp_path: Path) -> None:
    db, received = fake_psql(tmp_path)
    out = bash(cmd.restore_from(db, str(good)), tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert received.read_text() == "BEGIN;\n" + DUMP + "COMMIT;\n"


def test_a_restore_cut_short_sends_no_commit_and_fails(good: Path, tmp_path: Path) -> None:
    # psql's --single-transaction commits at end of input, whatever ended it; here a damaged
    # backup ends the input early and psql must not be told to commit what it got.
    data = good.read_bytes()
    cut = tmp_path / "cut.sql.gz"
    cut.write_bytes(data[: len(data) // 2])
    db, received = fake_psql(tmp_path)
    out = bash(cmd.restore_from(db, str(cut)), tmp_path)
    assert out.returncode != 0
    fed = received.read_text()
    assert fed.startswith("BEGIN;\n") and "COPY users" in fed and "COMMIT" not in fed


def test_a_stopped_restore_has_the_server_end_its_session(tmp_path: Path) -> None:
    # The psql behind `docker exec` outlives a killed client: the command's trap asks the
    # server to end the session it finds by its application_name.
    db = DatabaseConfig(name="azora_prod", psql="docker exec -i prod-db psql -U postgres",
                        pg_dump="docker exec prod-db pg_dump -U postgres",
                        backups_dir="/backups", backup_glob="azora_prod_*.sql.gz")
    for command in (cmd.restore_from(db, "/backups/a.sql.gz"),
                    cmd.safety_backup(db, "/backups/azora_prod_pre-restore_1.sql.gz")):
        inner = shlex.split(command)[-1]
        tag = re.search(r"application_name=(rollbot-[0-9a-f]{12})", inner)
        assert tag is not None
        assert f"WHERE application_name = '{tag.group(1)}'" in inner
        assert 'trap "end_session >/dev/null 2>&1; exit 143" TERM INT HUP' in inner
    # the plan shows the command the run sends: the tag is derived, not random
    assert cmd.restore_from(db, "/backups/a.sql.gz") == cmd.restore_from(db, "/backups/a.sql.gz")
    assert cmd.restore_from(db, "/backups/a.sql.gz") != cmd.restore_from(db, "/backups/b.sql.gz")


def test_the_restore_preflight_pipes_select_1_into_psql(tmp_path: Path) -> None:
    db, received = fake_psql(tmp_path)
    ping = cmd.database_ping(db, through_stdin=True)
    assert bash(ping, tmp_path).returncode == 0
    assert received.read_text().strip() == "SELECT 1;"
