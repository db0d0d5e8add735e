"""Pre-flight has one deadline; past it, the refusal names the check and the host still waiting."""

from __future__ import annotations

import asyncio

import pytest

from bot.errors import PreflightTimeout
from bot.preflight_deadline import checking, preflight_deadline


async def test_a_check_that_never_answers_is_named_with_its_host() -> None:
    with pytest.raises(PreflightTimeout) as refused:
        async with preflight_deadline(0.2):
            checking("Database reachable", "prod-user@10.0.0.11:22")
            await asyncio.sleep(0)  # answered
            checking("Backups dir writable", "prod-user@10.0.0.11:22")
            await asyncio.Event().wait()  # never answers
    assert str(refused.value).startswith(
        "pre-flight did not finish in 0.2 s: still waiting for 'Backups dir writable' on "
        "prod-user@10.0.0.11:22.")
    assert "[timeouts] preflight_s" in str(refused.value)


async def test_each_host_checked_in_parallel_is_named() -> None:
    async def host(name: str, answers: bool) -> None:
        checking("Current version", name)
        await asyncio.sleep(0)
        checking("Target image present" if answers else "Compose project", name)
        if not answers:
            await asyncio.Event().wait()

    with pytest.raises(PreflightTimeout) as refused:
        async with preflight_deadline(0.2):
            await asyncio.gather(host("web-1", True), host("web-2", False))
    assert "'Target image present' on web-1; 'Compose project' on web-2" in str(refused.value)


async def test_a_hang_before_any_check_says_nothing_answered() -> None:
    with pytest.raises(PreflightTimeout, match="still waiting for its first check"):
        async with preflight_deadline(0.1):
            await asyncio.Event().wait()


async def test_a_pre_flight_within_its_deadline_is_untouched() -> None:
    async with preflight_deadline(5) as watch:
        checking("Host reachable", "web-1")
    assert watch.waiting_for() == "'Host reachable' on web-1"


async def test_another_timeout_inside_is_not_mistaken_for_the_deadline() -> None:
    with pytest.raises(TimeoutError) as raised:
        async with preflight_deadline(5):
            async with asyncio.timeout(0.05):  # a read's own bound
                await asyncio.Event().wait()
    assert not isinstance(raised.value, PreflightTimeout)


async def test_outside_a_pre_flight_announcing_a_check_does_nothing() -> None:
    checking("Health", "web-1")  # a step or a verification check: no deadline, no error
    async with preflight_deadline(5) as watch:
        pass
    assert watch.waiting_for() == "its first check (nothing had answered yet)"
