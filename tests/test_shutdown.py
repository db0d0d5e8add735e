"""A stop that does not finish: a second SIGTERM, or the grace period, exits at once with 1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# A rollbot whose running rollback never ends: closing hangs. Shutdown is what is tested.
STUCK = """
import asyncio, sys
from types import SimpleNamespace
from handlers.shutdown import Draining, StopSignals, stop_gracefully

async def main(grace_s: float) -> None:
    signals = StopSignals()
    async def hand_over() -> list[int]:
        return [7]
    app = SimpleNamespace(rollbot=SimpleNamespace(stop_runs=lambda because: [3]),
                          auto=SimpleNamespace(hand_over=hand_over))
    print("ready", flush=True)
    await signals.first.wait()
    await stop_gracefully(app=app, drain=Draining(), close=asyncio.Event().wait,
                          signals=signals, grace_s=grace_s, drain_s=0)
    print("returned", flush=True)

asyncio.run(main(float(sys.argv[1])))
"""


def stuck_rollbot(grace_s: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", STUCK, str(grace_s)], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.parametrize(("grace_s", "signals", "why"), [
    (60.0, 2, "exiting now (a second stop signal)"),
    (0.5, 1, "exiting now (not stopped after 0.5 s)"),
])
def test_a_stop_that_does_not_finish_exits_anyway(grace_s: float, signals: int,
                                                  why: str) -> None:
    proc = stuck_rollbot(grace_s)
    try:
        started = time.monotonic()
        for _ in range(signals):
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, out
    assert "1 running rollback(s) stop after their current step; 1 watch(es)" in out
    assert why in out and "returned" not in out
    assert time.monotonic() - started < 5
