"""What rollbot sends for a command, run here by bash in a new session as sshd would run it:
the command's process group is announced first, and the host's own timeout ends all of it."""

from __future__ import annotations

import secrets
import subprocess
import threading
import time

from bot.edges.ssh import KILL_GRACE_S, kill_group_command, remote_command


def unique_sleep() -> str:
    return f"sleep 600.{secrets.randbelow(10**6):06d}"


def alive(needle: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True,
                         check=True)
    return [ln for ln in out.stdout.splitlines() if needle in ln]


def start(command: str, *, timeout: float) -> tuple[subprocess.Popen[str], int]:
    """Like sshd: a new session whose leader is the user's shell; returns it and the pgid."""
    proc = subprocess.Popen(["bash", "-c", remote_command(command, timeout=timeout)],
                            stdout=subprocess.PIPE, text=True, start_new_session=True,
                            env={"SHELL": "/bin/bash", "PATH": "/usr/bin:/bin"})
    assert proc.stdout is not None
    marker = proc.stdout.readline()
    assert marker.startswith("\x1erollbot-pgid ")
    return proc, int(marker.split()[-1])


def reaped(proc: subprocess.Popen[str]) -> subprocess.Popen[str]:
    """sshd reaps the session's shell as soon as it exits; so must the test, or its zombie
    would keep the process group alive."""
    threading.Thread(target=proc.wait, daemon=True).start()
    return proc


def test_output_is_unchanged_and_the_status_is_the_commands() -> None:
    proc, pgid = start("echo one; echo two >&2; exit 3", timeout=10)
    out, _ = proc.communicate(timeout=10)
    assert out == "one\ntwo\n" and proc.returncode == 3
    assert pgid == proc.pid  # `exec timeout` keeps the session leader's pid: the group's id


def test_the_hosts_timeout_ends_the_whole_group() -> None:
    sleeper = unique_sleep()
    proc, _ = start(f"{sleeper} | cat", timeout=0.5)
    proc.communicate(timeout=10)
    assert proc.returncode == 124
    assert alive(sleeper) == []


def test_killing_the_group_stops_it_and_sigkills_what_ignores_sigterm() -> None:
    polite, stubborn = unique_sleep(), unique_sleep()
    p1, g1 = start(polite, timeout=600)
    p2, g2 = start(f"trap '' TERM; {stubborn}", timeout=600)
    reaped(p1), reaped(p2)
    try:
        assert alive(polite) and alive(stubborn)
        out = subprocess.run(["bash", "-c", kill_group_command(g1)], capture_output=True,
                             text=True, timeout=30)
        assert out.stdout.strip() == "stopped" and alive(polite) == []
        started = time.monotonic()
        out = subprocess.run(["bash", "-c", kill_group_command(g2)], capture_output=True,
                             text=True, timeout=30)
        assert out.stdout.strip() == "killed" and alive(stubborn) == []
        assert time.monotonic() - started >= KILL_GRACE_S * 0.9
        # a group that is already gone: nothing to do, no error
        gone = subprocess.run(["bash", "-c", kill_group_command(g1)], capture_output=True,
                              text=True, timeout=30)
        assert gone.returncode == 0 and gone.stdout == ""
    finally:
        for p in (p1, p2):
            p.kill()
            p.wait(timeout=10)
