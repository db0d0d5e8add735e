"""Socket Mode: ``apps.connections.open`` and the WebSocket over which Slack delivers envelopes.

An app in Socket Mode calls ``apps.connections.open`` with its app-level token (``xapp-...``,
in the ``Authorization`` header) and gets ``{"ok": true, "url": "ws://HOST:PORT/socket-mode/
<ticket>"}`` (one connection per ticket). It connects there; Slack greets it with ``hello``,
then delivers what it would otherwise POST to the request URL as envelopes::

    {"envelope_id": "...", "type": "slash_commands" | "interactive" | "events_api",
     "payload": {...}, "accepts_response_payload": bool, "retry_attempt": 0, "retry_reason": ""}

The app acknowledges each with ``{"envelope_id": "...", "payload": {...}}`` (the payload is
optional: a slash command's immediate answer, a view_submission's ``response_action``).
Slack waits 3 seconds: an envelope without an ack by then counts as not acknowledged (a late
ack is still recorded, with its time, but does not count).

- ``SocketModeHub``: the emulator's side (tickets, connections, envelopes, acks). ``Emulator``
  delegates to it: ``socket_send``, ``wait_socket_connected``, ``wait_socket_ack``,
  ``socket_disconnect``.
- ``SocketModeSender``: ``SlackSender``'s requests with the same payloads (trigger ids and
  response URLs minted by the emulator), delivered as envelopes instead of signed POSTs. As
  for HTTP, the sender then applies what Slack does with the answer: a slash command's
  immediate reply from the ack payload (or ``dispatch_failed`` without an ack in time), a
  view_submission's ``response_action``.
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Unpack

from aiohttp import WSCloseCode, WSMsgType, web

from slack_emulator.sender import ACK_WINDOW, SendOptions, SendResult, SentRequest, SlackSender
from slack_emulator.state import JSON, Identity

if TYPE_CHECKING:
    from slack_emulator.server import Emulator

ENVELOPE_TYPES = ("slash_commands", "interactive", "events_api")
SOCKET_PATH = "/socket-mode/"
# How long Slack keeps a connection before asking the app to refresh it (hello's debug_info).
APPROXIMATE_CONNECTION_TIME = 18060
# Interactive payloads whose ack may carry a response (view_submission: response_action).
_RESPONSE_PAYLOAD_INTERACTIONS = ("view_submission", "block_suggestion")


@dataclass
class SocketConnection:
    """One WebSocket an app opened with a ticket from ``apps.connections.open``."""

    id: str
    ticket: str
    opened_at: float  # time.monotonic()
    ws: web.WebSocketResponse = field(repr=False)
    closed_at: float | None = None
    close_code: int | None = None

    @property
    def open(self) -> bool:
        return self.closed_at is None and not self.ws.closed


@dataclass
class SocketAck:
    """The app's acknowledgement of an envelope, as received."""

    payload: JSON | None  # None: a bare ack
    at: float  # time.monotonic() when received
    connection_id: str
    raw: str


@dataclass
class SocketEnvelope:
    """An envelope Slack delivered, and what became of it."""

    envelope_id: str
    type: str
    payload: JSON
    accepts_response_payload: bool
    retry_attempt: int
    retry_reason: str
    connection_id: str
    sent_at: float  # time.monotonic()
    ack_window: float = ACK_WINDOW
    ack: SocketAck | None = None
    extra_acks: list[SocketAck] = field(default_factory=list)  # the same envelope acked again

    def to_message(self) -> JSON:
        """The envelope as it goes over the wire."""
        return {
            "envelope_id": self.envelope_id,
            "type": self.type,
            "payload": self.payload,
            "accepts_response_payload": self.accepts_response_payload,
            "retry_attempt": self.retry_attempt,
            "retry_reason": self.retry_reason,
        }

    @property
    def elapsed(self) -> float | None:
        """Seconds from delivery to the ack (None: no ack yet)."""
        return None if self.ack is None else self.ack.at - self.sent_at

    @property
    def acked_in_time(self) -> bool:
        elapsed = self.elapsed
        return elapsed is not None and elapsed <= self.ack_window

    @property
    def ack_payload(self) -> JSON | None:
        return None if self.ack is None else self.ack.payload

    @property
    def status(self) -> str:
        """``acked`` (within 3 s), ``late``, ``not_acked`` (3 s passed) or ``pending``."""
        if self.acked_in_time:
            return "acked"
        if self.ack is not None:
            return "late"
        if time.monotonic() - self.sent_at > self.ack_window:
            return "not_acked"
        return "pending"

    @property
    def decided(self) -> bool:
        """Slack knows the outcome: acked in time, or the 3 seconds are over."""
        return self.status != "pending"

    def to_json(self) -> JSON:
        return {
            **self.to_message(),
            "connection_id": self.connection_id,
            "status": self.status,
            "elapsed": self.elapsed,
            "ack_payload": self.ack_payload,
        }


class SocketModeHub:
    """Tickets, connections, envelopes and acks: Slack's end of Socket Mode."""

    def __init__(
        self,
        ident: Identity,
        base_url: Callable[[], str],
        *,
        ack_window: float = ACK_WINDOW,
        host_name: str = "applink-emulator",
    ) -> None:
        self.ident = ident
        self.base_url = base_url
        self.ack_window = ack_window
        self.host_name = host_name
        self.tickets: dict[str, float] = {}  # unused tickets and when they were issued
        self.connections: list[SocketConnection] = []
        self.envelopes: dict[str, SocketEnvelope] = {}
        self.stray: list[JSON] = []  # text frames from the app that ack no known envelope
        self.closing = False

    # -- apps.connections.open ---------------------------------------------------------------

    def connections_open(self, params: JSON) -> JSON:
        """The Web API method (the caller checked the app-level token)."""
        ticket = secrets.token_hex(16)
        self.tickets[ticket] = time.monotonic()
        return {"url": self.url_for(ticket)}

    def url_for(self, ticket: str) -> str:
        parts = urllib.parse.urlsplit(self.base_url())
        scheme = "wss" if parts.scheme == "https" else "ws"
        return f"{scheme}://{parts.netloc}{SOCKET_PATH}{ticket}"

    # -- the WebSocket -----------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ticket = request.match_info["ticket"]
        if self.closing or self.tickets.pop(ticket, None) is None:
            return web.Response(status=401, text="invalid_ticket")
        ws = web.WebSocketResponse(timeout=5.0, autoping=True)
        await ws.prepare(request)
        conn = SocketConnection(
            id=f"c{len(self.connections) + 1}", ticket=ticket, opened_at=time.monotonic(), ws=ws
        )
        self.connections.append(conn)
        try:
            await ws.send_json(self._hello())
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._receive(conn, str(msg.data))
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            conn.closed_at = time.monotonic()
            conn.close_code = ws.close_code
        return ws

    def _hello(self) -> JSON:
        return {
            "type": "hello",
            "num_connections": len(self.open_connections()),
            "debug_info": {
                "host": self.host_name,
                "build_number": 1,
                "approximate_connection_time": APPROXIMATE_CONNECTION_TIME,
            },
            "connection_info": {"app_id": self.ident.app_id},
        }

    def _receive(self, conn: SocketConnection, raw: str) -> None:
        now = time.monotonic()
        try:
            message = json.loads(raw)
        except ValueError:
            self.stray.append({"raw": raw, "connection_id": conn.id})
            return
        envelope = (
            self.envelopes.get(str(message.get("envelope_id")))
            if isinstance(message, dict)
            else None
        )
        if envelope is None or not isinstance(message, dict):
            self.stray.append({"message": message, "connection_id": conn.id})
            return
        payload = message.get("payload")
        ack = SocketAck(
            payload=payload if isinstance(payload, dict) else None,
            at=now,
            connection_id=conn.id,
            raw=raw,
        )
        if envelope.ack is None:
            envelope.ack = ack
        else:
            envelope.extra_acks.append(ack)

    # -- delivering --------------------------------------------------------------------------

    def open_connections(self) -> list[SocketConnection]:
        return [c for c in self.connections if c.open]

    async def send(
        self,
        kind: str,
        payload: JSON,
        *,
        accepts_response_payload: bool | None = None,
        retry_attempt: int = 0,
        retry_reason: str = "",
    ) -> SocketEnvelope:
        """Deliver ``payload`` as a ``kind`` envelope over the newest open connection."""
        if kind not in ENVELOPE_TYPES:
            raise ValueError(f"envelope type must be one of {ENVELOPE_TYPES}, not {kind!r}")
        connections = self.open_connections()
        if not connections:
            raise LookupError("no open Socket Mode connection")
        conn = connections[-1]
        if accepts_response_payload is None:
            accepts_response_payload = kind == "slash_commands" or (
                kind == "interactive" and payload.get("type") in _RESPONSE_PAYLOAD_INTERACTIONS
            )
        envelope = SocketEnvelope(
            envelope_id=str(uuid.uuid4()),
            type=kind,
            payload=payload,
            accepts_response_payload=accepts_response_payload,
            retry_attempt=retry_attempt,
            retry_reason=retry_reason,
            connection_id=conn.id,
            sent_at=time.monotonic(),
            ack_window=self.ack_window,
        )
        self.envelopes[envelope.envelope_id] = envelope
        await conn.ws.send_str(json.dumps(envelope.to_message()))
        return envelope

    async def disconnect(self, reason: str = "refresh_requested") -> int:
        """Ask every open connection to reconnect (Slack's ``disconnect`` message)."""
        message = {"type": "disconnect", "reason": reason, "debug_info": {"host": self.host_name}}
        connections = self.open_connections()
        for conn in connections:
            await conn.ws.send_json(message)
        return len(connections)

    async def close_all(self, code: int = WSCloseCode.GOING_AWAY) -> None:
        """Close every connection and refuse new ones (the emulator is stopping)."""
        self.closing = True
        for conn in self.open_connections():
            await conn.ws.close(code=code, message=b"emulator stopping")

    async def on_shutdown(self, _app: web.Application) -> None:
        await self.close_all()


class SocketModeSender(SlackSender):
    """``SlackSender`` over Socket Mode: the same requests, delivered as envelopes.

    Each send waits until Slack would know the outcome (an ack, or 3 seconds without one)
    and returns a ``SocketSendResult``: status 200 with the ack's payload as ``json`` when
    acknowledged in time, status 0 otherwise; ``envelope`` is the emulator's record.
    """

    def __init__(self, emulator: Emulator, team_id: str | None = None) -> None:
        super().__init__(
            "socket-mode",
            "",  # nothing is signed in Socket Mode
            emulator,
            team_id=team_id or emulator.ident.team_id,
        )
        self.emu = emulator

    # The same requests as SlackSender's, typed with their socket result (``envelope``).

    async def slash_command(
        self,
        user_id: str,
        channel_id: str,
        text: str,
        command: str = "/rollback",
        **opts: Unpack[SendOptions],
    ) -> SocketSendResult:
        return _socket(await super().slash_command(user_id, channel_id, text, command, **opts))

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
    ) -> SocketSendResult:
        return _socket(
            await super().block_action(
                user_id, channel_id, message_ts, action_id, value, block_id, view, **opts
            )
        )

    async def view_submission(
        self, user_id: str, view_id: str, values: JSON, **opts: Unpack[SendOptions]
    ) -> SocketSendResult:
        return _socket(await super().view_submission(user_id, view_id, values, **opts))

    async def message_action(
        self,
        user_id: str,
        channel_id: str,
        message_ts: str,
        callback_id: str,
        **opts: Unpack[SendOptions],
    ) -> SocketSendResult:
        return _socket(
            await super().message_action(user_id, channel_id, message_ts, callback_id, **opts)
        )

    async def app_mention(
        self,
        user_id: str,
        channel_id: str,
        text: str,
        thread_ts: str | None = None,
        **opts: Unpack[SendOptions],
    ) -> SocketSendResult:
        return _socket(await super().app_mention(user_id, channel_id, text, thread_ts, **opts))

    async def app_home_opened(
        self, user_id: str, tab: str = "home", **opts: Unpack[SendOptions]
    ) -> SocketSendResult:
        return _socket(await super().app_home_opened(user_id, tab, **opts))

    async def home_action(
        self,
        user_id: str,
        action_id: str,
        value: str | None = None,
        block_id: str | None = None,
        **opts: Unpack[SendOptions],
    ) -> SocketSendResult:
        return _socket(await super().home_action(user_id, action_id, value, block_id, **opts))

    async def event_callback(self, event: JSON, **opts: Unpack[SendOptions]) -> SocketSendResult:
        return _socket(await super().event_callback(event, **opts))

    async def _send(self, req: SentRequest, timeout: float) -> SendResult:
        """Deliver the request's payload as an envelope; ``timeout`` does not apply (3 s)."""
        kind, payload = envelope_payload(req)
        retry = req.headers.get("X-Slack-Retry-Num")
        envelope = await self.emu.socket_send(
            kind,
            payload,
            retry_attempt=int(retry) if retry else 0,
            retry_reason=req.headers.get("X-Slack-Retry-Reason", "") if retry else "",
        )
        await self.emu.wait_socket_ack(envelope.envelope_id)
        if envelope.acked_in_time:
            answer = envelope.ack_payload
            return SocketSendResult(
                status=200,
                text=json.dumps(answer) if answer is not None else "",
                json=answer,
                elapsed=envelope.elapsed or 0.0,
                request=req,
                envelope=envelope,
            )
        return SocketSendResult(
            status=0,  # no answer: Slack shows a slash command's user "dispatch_failed"
            text="",
            json=None,
            elapsed=time.monotonic() - envelope.sent_at,
            request=req,
            envelope=envelope,
        )


@dataclass
class SocketSendResult(SendResult):
    """A ``SendResult`` for an envelope; ``request`` is the HTTP form it was built from."""

    envelope: SocketEnvelope | None = None  # always set by SocketModeSender


def _socket(result: SendResult) -> SocketSendResult:
    if not isinstance(result, SocketSendResult):
        raise TypeError("expected a Socket Mode result")
    return result


def envelope_payload(req: SentRequest) -> tuple[str, JSON]:
    """The envelope type and payload of a request ``SlackSender`` would POST.

    JSON bodies are Events API callbacks; a form with one ``payload`` field is an
    interaction; any other form is a slash command (its fields, as strings, as Slack sends).
    """
    content_type = req.headers.get("Content-Type", "")
    text = req.body.decode()
    if content_type.startswith("application/json"):
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("an Events API body must be a JSON object")
        return "events_api", data
    fields = dict(urllib.parse.parse_qsl(text, keep_blank_values=True))
    if set(fields) == {"payload"}:
        data = json.loads(fields["payload"])
        if not isinstance(data, dict):
            raise ValueError("an interaction payload must be a JSON object")
        return "interactive", data
    return "slash_commands", dict(fields)


__all__ = [
    "ENVELOPE_TYPES",
    "SocketAck",
    "SocketConnection",
    "SocketEnvelope",
    "SocketModeHub",
    "SocketModeSender",
    "SocketSendResult",
    "envelope_payload",
]
