"""Only the incident channels, only the people on the list (or in the on-call group)."""

import pytest

from bot.config import SlackConfig
from handlers.access import Access

CONFIG = SlackConfig(incidents_channel="C0INCIDENTS", oncall_channel="#on-call",
                     allowed_users=("U0ALICE",), allowed_usergroups=("S0ONCALL",),
                     restore_approvers=("U0BOB",), usergroup_cache_s=60)


class Groups:
    def __init__(self) -> None:
        self.members = {"S0ONCALL": ["U0CAROL"]}
        self.calls = 0
        self.fail = False

    async def __call__(self, group: str) -> list[str]:
        self.calls += 1
        if self.fail:
            raise OSError("slack down")
        return self.members[group]


async def test_channels_by_id_or_name() -> None:
    looked_up: list[str] = []

    async def name_of(channel: str) -> str | None:
        looked_up.append(channel)
        return {"C0ONCALL": "on-call"}.get(channel)

    access = Access(CONFIG, members_of=Groups(), name_of=name_of)
    assert (await access.channel_allowed("C0INCIDENTS")).allowed
    assert (await access.channel_allowed("C0OTHER", "on-call")).allowed
    assert (await access.channel_allowed("C0ONCALL")).allowed  # a mention: name looked up
    assert (await access.channel_allowed("C0ONCALL")).allowed
    assert looked_up == ["C0ONCALL"]  # once
    refused = await access.channel_allowed("C0RANDOM", "random")
    assert not refused.allowed and "<#C0INCIDENTS> and #on-call" in refused.reason


async def test_users_and_groups_with_a_short_cache() -> None:
    now = [0.0]
    groups = Groups()
    access = Access(CONFIG, members_of=groups, clock=lambda: now[0])
    assert (await access.user_allowed("U0ALICE")).allowed
    assert (await access.user_allowed("U0CAROL")).allowed
    assert not (await access.user_allowed("U0MALLORY")).allowed
    assert groups.calls == 1  # cached
    groups.members["S0ONCALL"] = []
    now[0] = 61
    assert not (await access.user_allowed("U0CAROL")).allowed  # left the group: refreshed


async def test_slack_outage_keeps_the_last_known_group() -> None:
    now = [0.0]
    groups = Groups()
    access = Access(CONFIG, members_of=groups, clock=lambda: now[0])
    assert (await access.user_allowed("U0CAROL")).allowed
    groups.fail, now[0] = True, 120
    assert (await access.user_allowed("U0CAROL")).allowed


@pytest.mark.parametrize(("user", "ok"), [("U0BOB", True), ("U0ALICE", False)])
async def test_restore_approvers(user: str, ok: bool) -> None:
    access = Access(CONFIG, members_of=Groups())
    assert (await access.approver_allowed(user)).allowed is ok
