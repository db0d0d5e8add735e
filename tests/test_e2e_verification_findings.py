"""A check after the rollback fails on what really went wrong, and only on that.

The service logs a real exception (and the usual healthy chatter about "0 errors"), rows vanish
from a table, and warnings pile up; the checks come due in seconds (game-day time).
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator

import httpx
import pytest

from bot.config import Runbook
from bot.edges.http import HttpxProbe
from bot.model import ProcedureName, RunStatus, Tier
from bot.post_rollback.schedule import VerificationSchedule
from bot.service import Rollbot
from bot.store.runs import Store
from tests.sandbox import Sandbox
from tests.test_e2e_procedures import request
from tests.test_e2e_verification import Announcements, wire

pytestmark = pytest.mark.e2e

TYPE_ERROR = "TypeError: Cannot read properties of undefined (reading 'total')"
CHATTER = ("INFO orders synced, 0 errors", "INFO metrics error_count=0",
           "INFO errorHandler registered")


@pytest.fixture
async def bot(runbook: Runbook, store: Store) -> AsyncIterator[Rollbot]:
    env = runbook.environments["production"].model_copy(update={
        "verify_after_minutes": (0.01, 0.02),  # Immediate and Extended, both due at once
        "max_warning_lines": 2, "max_row_loss_ratio": 0.2})
    tuned = runbook.model_copy(update={"environments": {**runbook.environments,
                                                        "production": env}})
    async with httpx.AsyncClient() as client:
        yield Rollbot(runbook=tuned, store=store, probe=HttpxProbe(client))


def api_logs(*lines: str) -> None:
    """The running api container writes these lines to its log, as the app itself would."""
    container = subprocess.run(
        ["docker", "ps", "-q", "--filter", "label=com.docker.compose.project=azora",
         "--filter", "label=com.docker.compose.service=api"],
        capture_output=True, text=True, timeout=30, check=True).stdout.split()[0]
    text = "".join(f"{line}\n" for line in lines)
    subprocess.run(["docker", "exec", "-i", container, "sh", "-c", "cat > /proc/1/fd/1"],
                   input=text, capture_output=True, text=True, timeout=30, check=True)


async def test_an_exception_lost_rows_and_warnings_fail_the_checks(production: Sandbox,
                                                                  bot: Rollbot) -> None:
    heard = Announcements()
    verifier = VerificationSchedule(rollbot=bot, announce=heard, sweep_s=1)
    wire(bot, verifier)
    outcome = await bot.rollback(request(ProcedureName.SIMPLE))
    assert outcome.status is RunStatus.SUCCEEDED
    # After the rollback: v1.2.2 hits a bug, a cleanup job deletes rows, warnings pile up.
    api_logs(*CHATTER, TYPE_ERROR, "WARN slow query", "WARN slow query", "WARN pool 90% used")
    production.psql("DELETE FROM orders WHERE id IN (SELECT id FROM orders ORDER BY id DESC "
                    "LIMIT 3)")                                      # 8 → 5: 37.5 %
    production.psql("DELETE FROM users WHERE id = (SELECT max(id) FROM users)")  # 5 → 4: 20 %
    await verifier.start()
    try:
        await heard.wait(2)
    finally:
        await verifier.stop()
    immediate, extended = (r for _, r in heard.seen)
    assert (immediate.tier, extended.tier) == (Tier.IMMEDIATE, Tier.EXTENDED)
    for result in (immediate, extended):
        failed = {i.name: i.detail for i in result.items if not i.ok}
        assert not result.ok
        assert failed["Error logs"].startswith("1 error line(s) since the rollback, e.g. ")
        assert failed["Error logs"].endswith(TYPE_ERROR)  # the chatter did not count
        assert {"Services Up", "Health", "Version"}.isdisjoint(failed)  # the service is up
    failed = {i.name: i.detail for i in extended.items if not i.ok}
    assert failed["Row counts"].startswith(
        "rows lost, more than 20% of a table's rows since the rollback: orders 8 → 5 "
        "(lost 3, 37.5%)")
    assert "users 5 → 4" not in failed["Row counts"]  # exactly the ratio: passes
    assert failed["Warnings"].startswith("3 warning line(s) since the rollback (at most 2 "
                                         "allowed), e.g. ")
    stored = await verifier.store.results(outcome.run_id)
    assert [r.ok for r in stored] == [False, False]


async def test_a_small_loss_passes_with_a_note(production: Sandbox, bot: Rollbot) -> None:
    heard = Announcements()
    verifier = VerificationSchedule(rollbot=bot, announce=heard, sweep_s=1)
    wire(bot, verifier)
    assert (await bot.rollback(request(ProcedureName.SIMPLE))).status is RunStatus.SUCCEEDED
    production.psql("DELETE FROM users WHERE id = (SELECT max(id) FROM users)")  # 5 → 4: 20 %
    await verifier.start()
    try:
        await heard.wait(2)
        await asyncio.sleep(0)
    finally:
        await verifier.stop()
    extended = heard.seen[1][1]
    [counts] = [i for i in extended.items if i.name == "Row counts"]
    assert counts.ok, counts.detail
    assert counts.detail == ("users 4, orders 8; small loss within 20%: users 5 → 4 "
                             "(lost 1, 20%)")
    assert extended.ok, [i for i in extended.items if not i.ok]
