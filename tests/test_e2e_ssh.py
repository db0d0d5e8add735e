"""The SSH edge against the sandbox's real sshd: status, timeout, output cap, streaming, files."""

from __future__ import annotations

import asyncio
import secrets
import time

import pytest

from bot.config import Runbook, SshConfig
from bot.edges.ssh import KILL_GRACE_S, OUTPUT_CAP_BYTES, SshHost
from bot.errors import CommandFailed, CommandTimeout, ConnectionLost, HostKeyRejected
from tests.sandbox import Sandbox

pytestmark = pytest.mark.e2e


@pytest.fixture
def ssh_config(runbook: Runbook) -> SshConfig:
    return runbook.environments["production"].ssh


async def test_lines_stream_in_order_and_the_status_is_checked(ssh_config: SshConfig) -> None:
    seen: list[str] = []
    async with SshHost(ssh_config) as host:
        result = await host.run("echo one; echo two >&2; echo three", timeout=10,
                                on_line=seen.append)
        assert seen == ["one", "two", "three"]
        assert result.exit_status == 0 and result.output == "one\ntwo\nthree"
        with pytest.raises(CommandFailed) as failed:
            await host.run("echo 'no such image' >&2; exit 3", timeout=10)
        assert failed.value.exit_status == 3
        assert failed.value.output_tail == "no such image"
        unchecked = await host.run("exit 4", timeout=10, check=False)
        assert unchecked.exit_status == 4
        # the same connection is reused: still usable after failures
        assert (await host.run("whoami", timeout=10)).output == "prod-user"


async def test_a_command_past_its_timeout_is_stopped(ssh_config: SshConfig) -> None:
    async with SshHost(ssh_config) as host:
        with pytest.raises(CommandTimeout, match=r"did not finish within 0\.5 s"):
            await host.run("sleep 30", timeout=0.5)
        assert (await host.run("echo still here", timeout=10)).output == "still here"


async def test_output_is_capped_to_its_tail(ssh_config: SshConfig) -> None:
    async with SshHost(ssh_config) as host:
        result = await host.run("seq 1 200000", timeout=60)
    assert result.truncated
    assert len(result.output) <= OUTPUT_CAP_BYTES
    assert result.output.endswith("199999\n200000")


async def test_files_are_replaced_atomically_with_a_backup(ssh_config: SshConfig) -> None:
    target = "/home/prod-user/rollbot-test.txt"
    async with SshHost(ssh_config) as host:
        await host.run(f"printf 'old\\n' > {target} && chmod 640 {target}", timeout=10)
        await host.write_file_atomic(target, "new\n", backup_path=target + ".bak")
        assert await host.read_file(target) == "new\n"
        assert await host.read_file(target + ".bak") == "old\n"
        mode = await host.run(f"stat -c %a {target}; ls {target}.rollbot-tmp 2>&1 || true",
                              timeout=10)
        assert mode.output.splitlines()[0] == "640"  # permissions kept
        assert "No such file" in mode.output  # no temp file left behind
        await host.run(f"rm -f {target} {target}.bak", timeout=10)


async def test_unknown_host_key_and_unreachable_host(ssh_config: SshConfig,
                                                     sandbox_host: Sandbox) -> None:
    other = ssh_config.model_copy(update={
        "known_hosts": sandbox_host.state / "client" / "known_hosts.other"})
    with pytest.raises(HostKeyRejected, match=r"does not match .*Nothing was sent"):
        async with SshHost(other):
            pass
    missing = ssh_config.model_copy(update={"known_hosts": sandbox_host.state / "nope"})
    with pytest.raises(HostKeyRejected, match="does not exist"):
        async with SshHost(missing):
            pass
    closed = ssh_config.model_copy(update={"port": 1, "connect_timeout_s": 3})
    with pytest.raises(ConnectionLost, match="cannot reach"):
        async with SshHost(closed):
            pass


def unique_sleep() -> str:
    """A `sleep` no other process on the host runs, so `ps` finds exactly ours."""
    return f"sleep 600.{secrets.randbelow(10**6):06d}"


async def test_a_command_past_its_timeout_is_gone_from_the_host(
    ssh_config: SshConfig, sandbox_host: Sandbox
) -> None:
    sleeper = unique_sleep()
    async with SshHost(ssh_config) as host:
        # a child and a grandchild, as a runbook command's pipeline would have
        with pytest.raises(CommandTimeout, match=r"within 1 s and was stopped: its processes on "
                                                 r"the host were killed"):
            await host.run(f"sh -c '{sleeper}; echo never' | cat", timeout=1)
        assert sandbox_host.processes(sleeper) == []


async def test_a_command_that_ignores_sigterm_is_killed_after_the_grace(
    ssh_config: SshConfig, sandbox_host: Sandbox
) -> None:
    sleeper = unique_sleep()
    async with SshHost(ssh_config) as host:
        started = time.monotonic()
        with pytest.raises(CommandTimeout):
            await host.run(f"trap '' TERM; {sleeper}", timeout=1)
        assert sandbox_host.processes(sleeper) == []
        assert time.monotonic() - started >= 1 + KILL_GRACE_S * 0.9


async def test_a_cancelled_command_is_killed_on_the_host(
    ssh_config: SshConfig, sandbox_host: Sandbox
) -> None:
    sleeper = unique_sleep()
    async with SshHost(ssh_config) as host:
        seen = asyncio.Event()
        task = asyncio.create_task(host.run(f"echo started; {sleeper}", timeout=600,
                                            on_line=lambda _line: seen.set()))
        await asyncio.wait_for(seen.wait(), timeout=10)
        assert sandbox_host.processes(sleeper)  # it really runs
        # what the engine does when a step outlives its own timeout: cancel it
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert sandbox_host.processes(sleeper) == []
        assert (await host.run("echo still here", timeout=10)).output == "still here"


async def test_sftp_reads_and_writes_that_hang_time_out(ssh_config: SshConfig) -> None:
    # A FIFO with no writer: the host's SFTP server blocks on open, as on a hung NFS mount.
    fifo = f"/home/prod-user/rollbot-hang-{secrets.token_hex(4)}"
    async with SshHost(ssh_config, sftp_timeout_s=1) as host:
        await host.run(f"mkfifo {fifo}", timeout=10)
        try:
            with pytest.raises(CommandTimeout, match=rf"reading {fifo} on prod-user@.* did not "
                                                     r"finish within 1 s"):
                await host.read_file(fifo)
            await host.run(f"timeout 5 sh -c ': > {fifo}'", timeout=10, check=False)
            with pytest.raises(CommandTimeout, match=r"either unchanged or completely replaced"):
                await host.write_file_atomic(fifo, "new\n", backup_path=fifo + ".bak")
            await host.run(f"timeout 5 sh -c ': > {fifo}'", timeout=10, check=False)
            # a fresh SFTP session serves the next read
            await host.run("echo ok > /home/prod-user/rollbot-sftp-ok.txt", timeout=10)
            assert await host.read_file("/home/prod-user/rollbot-sftp-ok.txt") == "ok\n"
        finally:
            await host.run(f"rm -f {fifo} {fifo}.bak /home/prod-user/rollbot-sftp-ok.txt",
                           timeout=10)
