"""conversations.history and conversations.replies: a channel's or a thread's messages, paged.

Slack's parameters (``channel``, ``ts``, ``cursor``, ``limit``, ``oldest``, ``latest``,
``inclusive``, ``include_all_metadata``) and shapes: history is newest first and holds the
channel's top-level messages (a thread's parent with its ``reply_count``), replies is the parent
then its replies, oldest first. Message metadata is returned only with ``include_all_metadata``.
Ephemeral and deleted messages are never returned.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from slack_emulator.state import JSON, Channel, Identity, Message, Workspace

HISTORY_DEFAULT_LIMIT = 100
REPLIES_DEFAULT_LIMIT = 1000
MAX_LIMIT = 999  # Slack returns at most this many, whatever limit asks for
_CURSOR_PREFIX = "next_ts:"


class ConversationError(Exception):
    """A Slack error name for these methods (channel_not_found, invalid_cursor, …)."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def _flag(value: Any) -> bool:
    """Slack's booleans: true/1 (form fields and query strings arrive as text)."""
    return value is True or str(value).lower() in ("true", "1")


def _ts(params: JSON, key: str, error: str) -> float | None:
    value = params.get(key)
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConversationError(error) from None


def _limit(params: JSON, default: int) -> int:
    try:
        asked = int(params.get("limit") or default)
    except (TypeError, ValueError):
        raise ConversationError("invalid_limit") from None
    return max(1, min(asked, max(default, MAX_LIMIT)))


def _cursor(params: JSON) -> str | None:
    raw = params.get("cursor")
    if not raw:
        return None
    try:
        decoded = base64.b64decode(str(raw), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise ConversationError("invalid_cursor") from None
    if not decoded.startswith(_CURSOR_PREFIX):
        raise ConversationError("invalid_cursor")
    return decoded[len(_CURSOR_PREFIX):]


def _in_window(ts: str, oldest: float | None, latest: float | None, inclusive: bool) -> bool:
    t = float(ts)
    if oldest is not None and (t < oldest or (t == oldest and not inclusive)):
        return False
    return not (latest is not None and (t > latest or (t == latest and not inclusive)))


class Conversations:
    """The two read methods over the workspace's messages."""

    def __init__(self, ws: Workspace, channel: Callable[[JSON], Channel]) -> None:
        self.ws = ws
        self._channel = channel  # WebApi's lookup: channel_not_found as Slack answers it

    @property
    def ident(self) -> Identity:
        return self.ws.ident

    def _readable(self, params: JSON) -> str:
        ch = self._channel(params)
        if not ch.bot_member:
            raise ConversationError("not_in_channel")
        return ch.id

    def _shown(self, msg: Message, *, with_metadata: bool, replies: list[Message]) -> JSON:
        out = msg.to_slack(self.ident)
        if not with_metadata:
            out.pop("metadata", None)
        if replies and not msg.is_reply:
            users = list(dict.fromkeys(r.user for r in replies))
            out.update(thread_ts=msg.ts, reply_count=len(replies), reply_users=users,
                       reply_users_count=len(users), latest_reply=replies[-1].ts)
        return out

    def _page(self, found: list[Message], params: JSON, *, default_limit: int,
              newest_first: bool, replies_of: Callable[[Message], list[Message]]) -> JSON:
        oldest = _ts(params, "oldest", "invalid_ts_oldest")
        latest = _ts(params, "latest", "invalid_ts_latest")
        inclusive = _flag(params.get("inclusive"))
        with_metadata = _flag(params.get("include_all_metadata"))
        window = [m for m in found if _in_window(m.ts, oldest, latest, inclusive)]
        window.sort(key=lambda m: float(m.ts), reverse=newest_first)
        start = _cursor(params)
        if start is not None:
            keep = [i for i, m in enumerate(window) if m.ts == start]
            if not keep:
                raise ConversationError("invalid_cursor")
            window = window[keep[0]:]
        limit = _limit(params, default_limit)
        page, rest = window[:limit], window[limit:]
        out: JSON = {
            "messages": [self._shown(m, with_metadata=with_metadata, replies=replies_of(m))
                         for m in page],
            "has_more": bool(rest),
        }
        if rest:
            cursor = base64.b64encode((_CURSOR_PREFIX + rest[0].ts).encode()).decode()
            out["response_metadata"] = {"next_cursor": cursor}
        return out

    def _thread_replies(self, channel: str, root: Message) -> list[Message]:
        return [m for m in self.ws.visible(channel)
                if m.ephemeral_to is None and m.is_reply and m.thread_ts == root.ts]

    def history(self, params: JSON) -> JSON:
        channel = self._readable(params)
        top = [m for m in self.ws.visible(channel) if m.ephemeral_to is None and not m.is_reply]
        out = self._page(top, params, default_limit=HISTORY_DEFAULT_LIMIT, newest_first=True,
                         replies_of=lambda m: self._thread_replies(channel, m))
        out.update(pin_count=0, channel_actions_ts=None, channel_actions_count=0)
        return out

    def replies(self, params: JSON) -> JSON:
        channel = self._readable(params)
        ts = params.get("ts")
        if not ts:
            raise ConversationError("thread_not_found")
        msg = self.ws.find_message(channel, str(ts))
        if msg is None:
            raise ConversationError("thread_not_found")
        root = self.ws.find_message(channel, msg.thread_ts) if msg.is_reply and msg.thread_ts \
            else msg
        if root is None:
            raise ConversationError("thread_not_found")
        thread = [root, *self._thread_replies(channel, root)]
        return self._page(thread, params, default_limit=REPLIES_DEFAULT_LIMIT, newest_first=False,
                          replies_of=lambda m: self._thread_replies(channel, m))
