"""Slack's side of inbound requests: commands, clicks, modal submissions, shortcuts, events.

Each send POSTs to the app's request URL exactly as Slack does (same content types, same
fields, signed with the signing secret) and returns a ``SendResult``. Trigger ids and
response URLs are minted by the emulator, which also supplies the clicked message and
the submitted view, and afterwards applies what Slack would apply of the app's answer
(a slash command's immediate message, a ``view_submission`` ``response_action``) when
the app answered with HTTP 200 within Slack's 3 seconds.
"""

from __future__ import annotations

import json
import secrets
import string
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

import aiohttp

from slack_emulator.client import EmulatorClient
from slack_emulator.signing import signature, signed_headers

if TYPE_CHECKING:
    from slack_emulator.server import Emulator

JSON = dict[str, Any]
ACK_WINDOW = 3.0  # seconds Slack waits for the app's answer
USER_AGENT = "Slackbot 1.0 (+https://api.slack.com/robots)"
VERIFICATION_TOKEN = "emulatorverificationtoken"  # the deprecated "token" field


class SendOptions(TypedDict, total=False):
    timestamp: int  # X-Slack-Request-Timestamp override (stale requests)
    signature: str  # X-Slack-Signature override
    bad_signature: bool  # sign with a wrong secret (forged request)
    retry_num: int  # X-Slack-Retry-Num
    retry_reason: str  # X-Slack-Retry-Reason, e.g. "http_timeout"
    timeout: float  # how long to wait for the app (default 10 s; Slack gives up at 3 s)


@dataclass
class SentRequest:
    """A request as sent, byte for byte, for ``replay``."""

    kind: str
    url: str
    body: bytes
    headers: dict[str, str]

    def to_json(self) -> JSON:
        return {
            "kind": self.kind,
            "url": self.url,
            "body": self.body.decode(),
            "headers": self.headers,
        }

    @classmethod
    def from_json(cls, data: JSON) -> SentRequest:
        return cls(data["kind"], data["url"], str(data["body"]).encode(), dict(data["headers"]))


@dataclass
class SendResult:
    status: int
    text: str
    json: Any  # the parsed JSON answer, or None
    elapsed: float  # seconds from send to answer
    request: SentRequest
    headers: dict[str, str] = field(default_factory=dict)
    trigger_id: str | None = None
    response_url: str | None = None

    @property
    def acked_in_time(self) -> bool:
        """HTTP 200 within Slack's 3 seconds (else Slack shows the user an error)."""
        return self.status == 200 and self.elapsed <= ACK_WINDOW

    def to_json(self) -> JSON:
        return {
            "status": self.status,
            "text": self.text,
            "json": self.json,
            "elapsed": self.elapsed,
            "acked_in_time": self.acked_in_time,
            "trigger_id": self.trigger_id,
            "response_url": self.response_url,
            "request": self.request.to_json(),
        }


def _random_id(prefix: str, n: int = 10) -> str:
    return prefix + "".join(
        secrets.choice(string.ascii_uppercase + string.digits) for _ in range(n)
    )


def _find_element(
    blocks: list[JSON], action_id: str, block_id: str | None
) -> tuple[JSON, JSON] | None:
    for block in blocks:
        if block_id is not None and block.get("block_id") != block_id:
            continue
        elements = list(block.get("elements") or []) if block.get("type") == "actions" else []
        elements += [block[k] for k in ("accessory", "element") if isinstance(block.get(k), dict)]
        for el in elements:
            if isinstance(el, dict) and el.get("action_id") == action_id:
                return block, el
    return None


class SlackSender:
    """Sends signed Slack requests to an app (``app_url``: its request URL)."""

    def __init__(
        self,
        app_url: str,
        signing_secret: str,
        emulator: Emulator | EmulatorClient | str,
        team_id: str = "T0AZORA",
    ) -> None:
        self.app_url = app_url
        self.signing_secret = signing_secret
        if isinstance(emulator, EmulatorClient):
            self.emulator = emulator
        else:
            self.emulator = EmulatorClient(
                emulator if isinstance(emulator, str) else emulator.base_url
            )
        self.team_id = team_id
        self._ident: JSON | None = None

    async def _identity(self) -> JSON:
        if self._ident is None:
            self._ident = await self.emulator.identity()
        return self._ident

    async def _user(self, user_id: str) -> JSON:
        ident = await self._identity()
        user = await self.emulator.user(user_id)
        name = user["name"] if user else user_id.lower()
        return {"id": user_id, "username": name, "name": name, "team_id": ident["team_id"]}

    # -- the kinds of request ----------------------------------------------------------------

    async def slash_command(
        self,
        user_id: str,
        channel_id: str,
        text: str,
        command: str = "/rollback",
        **opts: Unpack[SendOptions],
    ) -> SendResult:
        ident = await self._identity()
        channel = await self.emulator.channel(channel_id)
        user = await self._user(user_id)
        trigger_id = await self.emulator.mint_trigger_id(user_id)
        response_url = await self.emulator.mint_response_url(channel_id, user_id)
        form = {
            "token": VERIFICATION_TOKEN,
            "team_id": self.team_id,
            "team_domain": ident["team_domain"],
            "channel_id": channel_id,
            "channel_name": channel["name"] if channel else "unknown",
            "user_id": user_id,
            "user_name": user["username"],
            "command": command,
            "text": text,
            "api_app_id": ident["app_id"],
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": trigger_id,
        }
        body = urllib.parse.urlencode(form).encode()
        result = await self._post("slash_command", body, "application/x-www-form-urlencoded", opts)
        result.trigger_id, result.response_url = trigger_id, response_url
        if result.acked_in_time:
            answer = result.json if result.json is not None else result.text
            await self.emulator.apply_command_answer(response_url, answer, command)
        else:  # what Slack then tells the user
            error = "operation_timeout" if result.status == 200 else "dispatch_failed"
            await self.emulator.apply_command_failure(response_url, command, error)
        return result

    async def block_action(
        self,
        user_id: str,
        channel_id: str | None,
        message_ts: str | None,
        action_id: str,
        value: str | None = None,
        block_id: str | None = None,
        view: str | None = None,
        **opts: Unpack[SendOptions],
    ) -> SendResult:
        """A click on a button (or a pick in a select) of a message, or of a modal (``view``)."""
        ident = await self._identity()
        trigger_id = await self.emulator.mint_trigger_id(user_id)
        payload: JSON = {
            "type": "block_actions",
            "user": await self._user(user_id),
            "api_app_id": ident["app_id"],
            "token": VERIFICATION_TOKEN,
            "trigger_id": trigger_id,
            "team": {"id": self.team_id, "domain": ident["team_domain"]},
            "enterprise": None,
            "is_enterprise_install": False,
            "state": {"values": {}},
        }
        response_url = None
        if view is not None:
            record = await self.emulator.view(view)
            if record is None or record["closed"]:
                raise LookupError(f"no open view {view}")
            blocks = record["view"]["blocks"]
            payload["container"] = {"type": "view", "view_id": view}
            payload["view"] = record["view"]
        else:
            if channel_id is None or message_ts is None:
                raise ValueError("a message button needs channel_id and message_ts")
            record = await self.emulator.message(channel_id, message_ts)
            if record is None:
                raise LookupError(f"no message {message_ts} in {channel_id}")
            message = record["message"]
            ephemeral = record["ephemeral_to"] is not None
            blocks = message.get("blocks") or []
            payload["container"] = {
                "type": "message",
                "message_ts": message_ts,
                "channel_id": channel_id,
                "is_ephemeral": ephemeral,
            }
            channel = await self.emulator.channel(channel_id)
            payload["channel"] = {"id": channel_id, "name": channel["name"] if channel else ""}
            if not ephemeral:
                payload["message"] = message
            response_url = await self.emulator.mint_response_url(
                channel_id,
                user_id,
                message_ts=message_ts,
                ephemeral_original=ephemeral,
                thread_ts=message.get("thread_ts"),
            )
            payload["response_url"] = response_url
        found = _find_element(blocks, action_id, block_id)
        if found is None:
            raise LookupError(f"no element with action_id {action_id!r} to click")
        block, element = found
        payload["actions"] = [self._action(block, element, value)]
        body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
        result = await self._post("block_action", body, "application/x-www-form-urlencoded", opts)
        result.trigger_id, result.response_url = trigger_id, response_url
        return result

    async def message_action(
        self,
        user_id: str,
        channel_id: str,
        message_ts: str,
        callback_id: str,
        **opts: Unpack[SendOptions],
    ) -> SendResult:
        """A person runs a message shortcut (the message's "⋯" menu) on a stored message.

        Slack's ``message_action`` payload: the shortcut's ``callback_id``, a ``trigger_id``, a
        ``response_url`` for the channel (ephemeral answers), the whole ``message``, and who
        and where. Ephemeral messages have no shortcuts (LookupError, as for a missing one).
        """
        ident = await self._identity()
        record = await self.emulator.message(channel_id, message_ts)
        if record is None or record["ephemeral_to"] is not None or record["deleted"]:
            raise LookupError(f"no message {message_ts} in {channel_id} to run a shortcut on")
        channel = await self.emulator.channel(channel_id)
        trigger_id = await self.emulator.mint_trigger_id(user_id)
        response_url = await self.emulator.mint_response_url(channel_id, user_id)
        payload: JSON = {
            "type": "message_action",
            "token": VERIFICATION_TOKEN,
            "action_ts": f"{time.time():.6f}",
            "team": {"id": self.team_id, "domain": ident["team_domain"]},
            "user": await self._user(user_id),
            "channel": {"id": channel_id, "name": channel["name"] if channel else ""},
            "is_enterprise_install": False,
            "enterprise": None,
            "api_app_id": ident["app_id"],
            "callback_id": callback_id,
            "trigger_id": trigger_id,
            "response_url": response_url,
            "message_ts": message_ts,
            "message": record["message"],
        }
        body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
        result = await self._post(
            "message_action", body, "application/x-www-form-urlencoded", opts
        )
        result.trigger_id, result.response_url = trigger_id, response_url
        return result

    @staticmethod
    def _action(block: JSON, element: JSON, value: str | None) -> JSON:
        action: JSON = {
            "action_id": element["action_id"],
            "block_id": block.get("block_id"),
            "type": element.get("type", "button"),
            "action_ts": f"{time.time():.6f}",
        }
        if element.get("type") == "button":
            action["text"] = element.get("text")
            action["value"] = value if value is not None else element.get("value")
            if "style" in element:
                action["style"] = element["style"]
        else:
            options = element.get("options") or []
            chosen = next((o for o in options if o.get("value") == value), None)
            if chosen is not None:
                action["selected_option"] = chosen
            elif value is not None:
                action["value"] = value
        return action

    async def view_submission(
        self, user_id: str, view_id: str, values: JSON, **opts: Unpack[SendOptions]
    ) -> SendResult:
        """Submit a modal.

        ``values[block_id][action_id]`` is ``{"type": ..., "value": ...}`` or just the value.
        """
        ident = await self._identity()
        record = await self.emulator.view(view_id)
        if record is None or record["closed"]:
            raise LookupError(f"no open view {view_id}")
        view = record["view"]
        state = self._state_values(view.get("blocks", []), values)
        view = {**view, "state": {"values": state}}
        trigger_id = await self.emulator.mint_trigger_id(user_id)
        payload = {
            "type": "view_submission",
            "team": {"id": self.team_id, "domain": ident["team_domain"]},
            "user": await self._user(user_id),
            "api_app_id": ident["app_id"],
            "token": VERIFICATION_TOKEN,
            "trigger_id": trigger_id,
            "view": view,
            "response_urls": [],
            "enterprise": None,
            "is_enterprise_install": False,
        }
        body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
        result = await self._post(
            "view_submission", body, "application/x-www-form-urlencoded", opts
        )
        result.trigger_id = trigger_id
        if result.acked_in_time:
            await self.emulator.apply_view_answer(view_id, state, result.json)
        return result

    @staticmethod
    def _state_values(blocks: list[JSON], values: JSON) -> JSON:
        types = {
            (b.get("block_id"), b["element"].get("action_id")): b["element"].get("type")
            for b in blocks
            if isinstance(b.get("element"), dict)
        }
        state: JSON = {}
        for block_id, actions in values.items():
            state[block_id] = {}
            for action_id, v in actions.items():
                if isinstance(v, dict):
                    state[block_id][action_id] = v
                else:
                    kind = types.get((block_id, action_id), "plain_text_input")
                    state[block_id][action_id] = {"type": kind, "value": v}
        return state

    async def app_mention(
        self,
        user_id: str,
        channel_id: str,
        text: str,
        thread_ts: str | None = None,
        **opts: Unpack[SendOptions],
    ) -> SendResult:
        """Someone writes ``@rollbot <text>`` in a channel (stored there as their message)."""
        ident = await self._identity()
        mention = f"<@{ident['bot_user_id']}>"
        full = text if mention in text else f"{mention} {text}"
        ts = await self.emulator.post_user_message(channel_id, user_id, full, thread_ts)
        event: JSON = {
            "type": "app_mention",
            "user": user_id,
            "text": full,
            "ts": ts,
            "channel": channel_id,
            "event_ts": ts,
            "team": self.team_id,
            "client_msg_id": _random_id("", 32).lower(),
        }
        if thread_ts:
            event["thread_ts"] = thread_ts
        return await self.event_callback(event, **opts)

    async def app_home_opened(
        self, user_id: str, tab: str = "home", **opts: Unpack[SendOptions]
    ) -> SendResult:
        """The user opens the app's Home tab (or its Messages tab, ``tab="messages"``)."""
        home = await self.emulator.home(user_id)
        event: JSON = {
            "type": "app_home_opened",
            "user": user_id,
            "channel": "D" + user_id.lstrip("UW")[:10],  # the user's DM with the app
            "tab": tab,
            "event_ts": f"{time.time():.6f}",
        }
        if home is not None and tab == "home":
            event["view"] = home["view"]
        return await self.event_callback(event, **opts)

    async def home_action(
        self,
        user_id: str,
        action_id: str,
        value: str | None = None,
        block_id: str | None = None,
        **opts: Unpack[SendOptions],
    ) -> SendResult:
        """A click on a button of the user's Home tab (``container.type`` ``view``)."""
        home = await self.emulator.home(user_id)
        if home is None:
            raise LookupError(f"{user_id} has no home view to click in")
        return await self.block_action(
            user_id, None, None, action_id, value, block_id, home["view"]["id"], **opts
        )

    async def event_callback(self, event: JSON, **opts: Unpack[SendOptions]) -> SendResult:
        """Any Events API event, in Slack's ``event_callback`` envelope."""
        ident = await self._identity()
        envelope = {
            "token": VERIFICATION_TOKEN,
            "team_id": self.team_id,
            "context_team_id": self.team_id,
            "api_app_id": ident["app_id"],
            "event": event,
            "type": "event_callback",
            "event_id": _random_id("Ev"),
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self.team_id,
                    "user_id": ident["bot_user_id"],
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
        }
        body = json.dumps(envelope).encode()
        return await self._post("event_callback", body, "application/json", opts)

    # -- resending ---------------------------------------------------------------------------

    async def replay(
        self, previous: SentRequest | SendResult, *, timeout: float = 10.0
    ) -> SendResult:
        """The same request again, byte for byte, original headers included."""
        req = previous.request if isinstance(previous, SendResult) else previous
        return await self._send(req, timeout)

    async def retry(
        self,
        previous: SentRequest | SendResult,
        retry_num: int = 1,
        retry_reason: str = "http_timeout",
        *,
        timeout: float = 10.0,
    ) -> SendResult:
        """Slack's retry: the same body, freshly signed, with the retry headers."""
        req = previous.request if isinstance(previous, SendResult) else previous
        opts = SendOptions(retry_num=retry_num, retry_reason=retry_reason, timeout=timeout)
        return await self._post(req.kind, req.body, req.headers["Content-Type"], opts)

    # -- the wire ----------------------------------------------------------------------------

    async def _post(
        self, kind: str, body: bytes, content_type: str, opts: SendOptions
    ) -> SendResult:
        secret = (
            self.signing_secret + "-forged" if opts.get("bad_signature") else self.signing_secret
        )
        headers = {"Content-Type": content_type, "User-Agent": USER_AGENT}
        headers.update(signed_headers(secret, body, opts.get("timestamp")))
        if "signature" in opts:
            headers["X-Slack-Signature"] = opts["signature"]
        if "retry_num" in opts:
            headers["X-Slack-Retry-Num"] = str(opts["retry_num"])
            headers["X-Slack-Retry-Reason"] = opts.get("retry_reason", "http_timeout")
        return await self._send(
            SentRequest(kind, self.app_url, body, headers), opts.get("timeout", 10.0)
        )

    async def _send(self, req: SentRequest, timeout: float) -> SendResult:
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        async with aiohttp.ClientSession(timeout=client_timeout, auto_decompress=True) as session:
            start = time.monotonic()
            async with session.post(req.url, data=req.body, headers=req.headers) as res:
                raw = await res.read()
                elapsed = time.monotonic() - start
                text = raw.decode(errors="replace")
                parsed: Any = None
                if text.strip():
                    try:
                        parsed = json.loads(text)
                    except ValueError:
                        parsed = None
                return SendResult(res.status, text, parsed, elapsed, req, dict(res.headers))


__all__ = ["ACK_WINDOW", "SendOptions", "SendResult", "SentRequest", "SlackSender", "signature"]
