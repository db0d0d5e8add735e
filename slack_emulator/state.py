"""The emulated workspace: channels, people, messages, views, files, triggers, response URLs.

Plain data and bookkeeping only; the Web API rules (errors, limits) live in ``webapi``.
Times that expire things (trigger ids, response URLs, the automatic rate limiter) use the
workspace clock, ``monotonic() + offset``, which tests move with ``advance_time``.
"""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]
SLACKBOT = "USLACKBOT"  # who tells a user that a slash command failed


@dataclass(frozen=True)
class Identity:
    """Who the bot is and where: what ``auth.test`` answers and payloads carry."""

    token: str = "xoxb-test"
    team_id: str = "T0AZORA"
    team_domain: str = "azora"
    team_name: str = "Azora"
    bot_user_id: str = "U0ROLLBOT"
    bot_id: str = "B0ROLLBOT"
    app_id: str = "A0ROLLBOT"
    bot_name: str = "rollbot"


@dataclass
class Channel:
    id: str
    name: str
    members: set[str] | None = None  # None: everybody is a member
    bot_member: bool = True
    is_private: bool = False
    is_im: bool = False
    created: int = field(default_factory=lambda: int(time.time()))

    def has_member(self, user_id: str) -> bool:
        return self.members is None or user_id in self.members

    def to_slack(self) -> JSON:
        return {
            "id": self.id,
            "name": self.name,
            "is_channel": not self.is_im and not self.is_private,
            "is_group": self.is_private,
            "is_im": self.is_im,
            "is_private": self.is_private,
            "is_archived": False,
            "is_general": False,
            "is_member": self.bot_member,
            "created": self.created,
            "name_normalized": self.name,
            "topic": {"value": "", "creator": "", "last_set": 0},
            "purpose": {"value": "", "creator": "", "last_set": 0},
            "num_members": len(self.members) if self.members is not None else 0,
        }


@dataclass
class User:
    id: str
    name: str
    real_name: str
    tz: str = "Etc/UTC"
    is_bot: bool = False

    def to_slack(self, team_id: str) -> JSON:
        from datetime import datetime
        from zoneinfo import ZoneInfo

        offset = datetime.now(ZoneInfo(self.tz)).utcoffset()
        return {
            "id": self.id,
            "team_id": team_id,
            "name": self.name,
            "real_name": self.real_name,
            "deleted": False,
            "tz": self.tz,
            "tz_label": self.tz,
            "tz_offset": int(offset.total_seconds()) if offset else 0,
            "is_bot": self.is_bot,
            "is_admin": False,
            "is_app_user": False,
            "profile": {
                "real_name": self.real_name,
                "display_name": self.name,
                "real_name_normalized": self.real_name,
                "display_name_normalized": self.name,
                "team": team_id,
            },
        }


@dataclass
class Usergroup:
    id: str
    handle: str
    users: list[str]


@dataclass
class Version:
    """A message as it was before an edit."""

    text: str
    blocks: list[JSON] | None
    replaced_at: float
    via: str


@dataclass
class Message:
    channel: str
    ts: str
    text: str
    user: str
    blocks: list[JSON] | None = None
    bot_id: str | None = None
    thread_ts: str | None = None
    ephemeral_to: str | None = None  # the only user who sees it
    metadata: JSON | None = None
    attachments: list[JSON] | None = None
    files: list[JSON] = field(default_factory=list)
    edits: list[Version] = field(default_factory=list)  # earlier versions, oldest first
    deleted: bool = False
    via: str = "chat.postMessage"
    edited_ts: str | None = None
    username: str | None = None  # another app's bot (CI): the name it posts under

    @property
    def is_reply(self) -> bool:
        return self.thread_ts is not None and self.thread_ts != self.ts

    def to_slack(self, ident: Identity) -> JSON:
        out: JSON = {"type": "message", "text": self.text, "user": self.user, "ts": self.ts}
        if self.bot_id and self.bot_id != ident.bot_id:  # another app's bot: Slack's bot_message
            del out["user"]
            out.update(subtype="bot_message", bot_id=self.bot_id,
                       username=self.username or self.user)
        elif self.bot_id:
            out.update(
                bot_id=self.bot_id,
                app_id=ident.app_id,
                bot_profile={
                    "id": self.bot_id,
                    "app_id": ident.app_id,
                    "name": ident.bot_name,
                    "team_id": ident.team_id,
                    "deleted": False,
                },
            )
        out["team"] = ident.team_id
        if self.blocks is not None:
            out["blocks"] = self.blocks
        if self.attachments:
            out["attachments"] = self.attachments
        if self.thread_ts:
            out["thread_ts"] = self.thread_ts
        if self.metadata:
            out["metadata"] = self.metadata
        if self.files:
            out["files"] = self.files
            out["upload"] = True
        if self.edited_ts:
            out["edited"] = {"user": self.user, "ts": self.edited_ts}
        return out

    def replace(
        self, text: str, blocks: list[JSON] | None, *, at: float, via: str, ts: str
    ) -> None:
        self.edits.append(Version(self.text, self.blocks, at, via))
        self.text = text
        self.blocks = blocks
        self.edited_ts = ts


@dataclass
class View:
    id: str
    user_id: str
    payload: JSON  # the view object as the app sent it (block_ids filled in)
    hash: str
    root_view_id: str
    previous_view_id: str | None = None
    state_values: JSON = field(default_factory=dict)
    closed: bool = False
    history: list[JSON] = field(default_factory=list)  # earlier payloads
    submissions: list[JSON] = field(default_factory=list)  # state.values submitted
    errors: JSON | None = None  # last response_action "errors"
    problems: list[str] = field(default_factory=list)  # invalid response_action views

    def to_slack(self, ident: Identity) -> JSON:
        p = self.payload
        return {
            "id": self.id,
            "team_id": ident.team_id,
            "type": p.get("type", "modal"),
            "title": p.get("title"),
            "submit": p.get("submit"),
            "close": p.get("close"),
            "blocks": p.get("blocks", []),
            "private_metadata": p.get("private_metadata", ""),
            "callback_id": p.get("callback_id", ""),
            "external_id": p.get("external_id", ""),
            "state": {"values": self.state_values},
            "hash": self.hash,
            "clear_on_close": bool(p.get("clear_on_close", False)),
            "notify_on_close": bool(p.get("notify_on_close", False)),
            "root_view_id": self.root_view_id,
            "previous_view_id": self.previous_view_id,
            "app_id": ident.app_id,
            "app_installed_team_id": ident.team_id,
            "bot_id": ident.bot_id,
        }


@dataclass
class UploadedFile:
    id: str
    name: str
    length: int
    created: int
    title: str | None = None
    content: bytes | None = None
    alt_txt: str | None = None
    snippet_type: str | None = None
    channel: str | None = None
    thread_ts: str | None = None
    initial_comment: str | None = None
    message_ts: str | None = None
    completed: bool = False

    def to_slack(self, ident: Identity, base_url: str) -> JSON:
        out: JSON = {
            "id": self.id,
            "created": self.created,
            "timestamp": self.created,
            "name": self.name,
            "title": self.title or self.name,
            "mimetype": "text/plain",
            "filetype": self.snippet_type or "text",
            "pretty_type": "Plain Text",
            "user": ident.bot_user_id,
            "user_team": ident.team_id,
            "size": len(self.content) if self.content is not None else self.length,
            "mode": "hosted",
            "is_external": False,
            "is_public": self.channel is not None,
            "url_private": f"{base_url}files/{self.id}/{self.name}",
            "url_private_download": f"{base_url}files/{self.id}/download/{self.name}",
            "permalink": f"{base_url}files/{self.id}",
            "channels": [self.channel] if self.channel else [],
            "groups": [],
            "ims": [],
            "comments_count": 0,
        }
        if self.alt_txt:
            out["alt_txt"] = self.alt_txt
        return out

    def to_record(self) -> JSON:
        return {
            "id": self.id,
            "name": self.name,
            "title": self.title,
            "length": self.length,
            "content_base64": base64.b64encode(self.content).decode() if self.content else None,
            "channel": self.channel,
            "thread_ts": self.thread_ts,
            "initial_comment": self.initial_comment,
            "message_ts": self.message_ts,
            "completed": self.completed,
        }


@dataclass
class Trigger:
    id: str
    user_id: str
    issued_at: float
    exchanged: bool = False


@dataclass
class ResponseUrl:
    id: str
    channel_id: str | None
    user_id: str
    issued_at: float
    message_ts: str | None = None  # the message whose button was clicked, if any
    ephemeral_original: bool = False
    thread_ts: str | None = None
    uses: int = 0


class Workspace:
    """All emulated state, with id/ts minting and lookups."""

    def __init__(self, ident: Identity) -> None:
        self.ident = ident
        self.channels: dict[str, Channel] = {}
        self.users: dict[str, User] = {}
        self.usergroups: dict[str, Usergroup] = {}
        self.messages: dict[str, list[Message]] = {}  # per channel, in ts order
        self.views: dict[str, View] = {}
        self.modal_stacks: dict[str, list[str]] = {}  # per user, view ids, top last
        self.home_views: dict[str, str] = {}  # per user, the id of their App Home view
        self.files: dict[str, UploadedFile] = {}
        self.triggers: dict[str, Trigger] = {}
        self.response_urls: dict[str, ResponseUrl] = {}
        self.clock_offset = 0.0
        self._last_ts_us = 0
        self._counter = 0
        self.users[ident.bot_user_id] = User(
            ident.bot_user_id, ident.bot_name, ident.bot_name, is_bot=True
        )
        self.users[SLACKBOT] = User(SLACKBOT, "slackbot", "Slackbot", is_bot=True)

    # -- clock and ids --------------------------------------------------------------------

    def now(self) -> float:
        return time.monotonic() + self.clock_offset

    def new_ts(self) -> str:
        """A Slack message ts: unique and increasing ("1764230000.000100")."""
        us = max(int(time.time() * 1_000_000), self._last_ts_us + 1)
        self._last_ts_us = us
        return f"{us // 1_000_000}.{us % 1_000_000:06d}"

    def new_id(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}0{self._counter:07X}"

    def new_secret(self) -> str:
        return secrets.token_hex(12)

    # -- directory ------------------------------------------------------------------------

    def add_channel(
        self,
        channel_id: str,
        name: str,
        members: list[str] | None = None,
        *,
        bot_member: bool = True,
        is_private: bool = False,
    ) -> Channel:
        ch = Channel(
            channel_id,
            name.lstrip("#"),
            set(members) if members is not None else None,
            bot_member=bot_member,
            is_private=is_private,
        )
        self.channels[channel_id] = ch
        self.messages.setdefault(channel_id, [])
        return ch

    def add_user(
        self, user_id: str, name: str, real_name: str | None = None, tz: str = "Etc/UTC"
    ) -> User:
        user = User(user_id, name, real_name or name, tz)
        self.users[user_id] = user
        return user

    def add_usergroup(
        self, group_id: str, users: list[str], handle: str | None = None
    ) -> Usergroup:
        group = Usergroup(group_id, handle or group_id.lower(), list(users))
        self.usergroups[group_id] = group
        return group

    def resolve_channel(self, ref: str, *, by_name: bool = False) -> Channel | None:
        """A channel by id; with ``by_name`` also "#name"/"name", and a user id opens a DM."""
        if ref in self.channels:
            return self.channels[ref]
        if not by_name:
            return None
        if ref in self.users:
            dm_id = "D" + ref[1:]
            if dm_id not in self.channels:
                ch = self.add_channel(dm_id, ref, [ref])
                ch.is_im = True
            return self.channels[dm_id]
        name = ref.lstrip("#")
        for ch in self.channels.values():
            if ch.name == name:
                return ch
        return None

    def user_name(self, user_id: str) -> str:
        user = self.users.get(user_id)
        return user.name if user else user_id

    # -- messages -------------------------------------------------------------------------

    def post(self, channel: str, **fields: Any) -> Message:
        """Store a new message (or ephemeral) with a fresh ts, threads normalized to roots."""
        thread_ts = fields.pop("thread_ts", None)
        if thread_ts:
            parent = self.find_message(channel, thread_ts)
            if parent is not None and parent.is_reply:
                thread_ts = parent.thread_ts
        msg = Message(channel=channel, ts=self.new_ts(), thread_ts=thread_ts or None, **fields)
        self.messages.setdefault(channel, []).append(msg)
        return msg

    def find_message(
        self, channel: str, ts: str, *, ephemeral: bool | None = False
    ) -> Message | None:
        for msg in self.messages.get(channel, []):
            if msg.ts != ts or msg.deleted:
                continue
            if ephemeral is None or (msg.ephemeral_to is not None) == ephemeral:
                return msg
        return None

    def visible(self, channel: str) -> list[Message]:
        return [m for m in self.messages.get(channel, []) if not m.deleted]

    # -- interactivity tokens ---------------------------------------------------------------

    def mint_trigger(self, user_id: str) -> Trigger:
        digits = f"{int(time.time())}{self._counter:04d}"
        self._counter += 1
        trigger = Trigger(f"{digits}.{self._counter}.{self.new_secret()}", user_id, self.now())
        self.triggers[trigger.id] = trigger
        return trigger

    def mint_response_url(
        self,
        channel_id: str | None,
        user_id: str,
        *,
        message_ts: str | None = None,
        ephemeral_original: bool = False,
        thread_ts: str | None = None,
    ) -> ResponseUrl:
        rid = f"{self.ident.team_id}/{self._counter}/{self.new_secret()}"
        self._counter += 1
        ru = ResponseUrl(
            rid,
            channel_id,
            user_id,
            self.now(),
            message_ts=message_ts,
            ephemeral_original=ephemeral_original,
            thread_ts=thread_ts,
        )
        self.response_urls[rid] = ru
        return ru
