"""Who may drive rollbot, and where: channels, allowed users, on-call user groups."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.config import SlackConfig

log = logging.getLogger(__name__)

GroupMembers = Callable[[str], Awaitable[list[str]]]
ChannelName = Callable[[str], Awaitable[str | None]]


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


class Access:
    """Checks a (user, channel) pair against the runbook's [slack] table."""

    def __init__(self, config: SlackConfig, *, members_of: GroupMembers,
                 name_of: ChannelName | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._members_of = members_of
        self._name_of = name_of
        self._clock = clock
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}
        self._names: dict[str, str | None] = {}

    async def channel_allowed(self, channel_id: str, channel_name: str | None = None
                              ) -> Decision:
        """Ids match ids; "#incidents" in the runbook matches the channel's name."""
        if channel_id in self._config.channels:
            return Decision(True)
        by_name = [c[1:] for c in self._config.channels if c.startswith("#")]
        if by_name and channel_name is None:
            channel_name = await self._channel_name(channel_id)
        if channel_name is not None and channel_name in by_name:
            return Decision(True)
        where = " and ".join(self._display(c) for c in self._config.channels)
        return Decision(False, f"rollbot only takes commands in {where}, where the incident "
                               "team can see them.")

    def _display(self, channel: str) -> str:
        return channel if channel.startswith("#") else f"<#{channel}>"

    async def user_allowed(self, user_id: str) -> Decision:
        if user_id in self._config.allowed_users:
            return Decision(True)
        for group in self._config.allowed_usergroups:
            if user_id in await self._group(group):
                return Decision(True)
        return Decision(False, "you are not on rollbot's list of people allowed to roll back "
                               "production (runbook: slack.allowed_users / allowed_usergroups).")

    async def approver_allowed(self, user_id: str) -> Decision:
        approvers = self._config.restore_approvers
        if approvers is None:
            return await self.user_allowed(user_id)
        if user_id in approvers:
            return Decision(True)
        return Decision(False, "you are not one of the restore approvers, who approve database "
                               "restores and migration rollbacks (runbook: "
                               "slack.restore_approvers).")

    async def _channel_name(self, channel_id: str) -> str | None:
        if channel_id not in self._names and self._name_of is not None:
            try:
                self._names[channel_id] = await self._name_of(channel_id)
            except Exception as exc:
                log.warning("cannot look up the name of channel %s: %s", channel_id, exc)
                return None
        return self._names.get(channel_id)

    async def _group(self, group: str) -> frozenset[str]:
        now = self._clock()
        cached = self._cache.get(group)
        if cached is not None and now - cached[0] < self._config.usergroup_cache_s:
            return cached[1]
        try:
            members = frozenset(await self._members_of(group))
        except Exception as exc:
            # Fail closed but keep a recent answer: Slack being slow must not lock on-call out.
            log.warning("cannot list members of user group %s: %s", group, exc)
            return cached[1] if cached is not None else frozenset()
        self._cache[group] = (now, members)
        return members
