"""The emulator: an aiohttp server speaking Slack's Web API, plus its in-process controls.

    async with Emulator(token="xoxb-test") as emu:
        emu.add_channel("C0INCIDENTS", "incidents")
        client = AsyncWebClient(token="xoxb-test", base_url=emu.api_url)
        ...
        print(emu.transcript("C0INCIDENTS"))

Routes: ``POST|GET /api/<method>`` (the Web API), ``POST /upload/v1/<file>`` (files upload
v2), ``POST /response/<id>`` (response URLs), ``GET /files/<id>/...`` (uploaded bytes),
``GET /socket-mode/<ticket>`` (Socket Mode's WebSocket, see ``socket_mode``) and
``/_emulator/...`` (the same controls as JSON, see ``control``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from aiohttp import web

from slack_emulator import interactions
from slack_emulator.modes import Answer, CallRecord, Faults, MethodFault, RateLimitRule
from slack_emulator.render import transcript as render_transcript
from slack_emulator.socket_mode import SOCKET_PATH, SocketConnection, SocketEnvelope, SocketModeHub
from slack_emulator.state import (
    JSON,
    SLACKBOT,
    Identity,
    Message,
    UploadedFile,
    View,
    Workspace,
)
from slack_emulator.tiers import SlackLimits
from slack_emulator.webapi import ApiError, WebApi, decode_params

T = TypeVar("T")

# Methods that take an app-level token (xapp-...) only, in the Authorization header.
APP_TOKEN_METHODS = ("apps.connections.open",)


class Emulator:
    """A local Slack: Web API server, workspace state, call log and fault modes."""

    def __init__(
        self,
        token: str = "xoxb-test",  # noqa: S107 - the emulator's fake bot token
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        team_id: str = "T0AZORA",
        team_domain: str = "azora",
        bot_user_id: str = "U0ROLLBOT",
        bot_id: str = "B0ROLLBOT",
        app_id: str = "A0ROLLBOT",
        bot_name: str = "rollbot",
        extra_tokens: tuple[str, ...] = (),
        app_tokens: tuple[str, ...] = (),
        trigger_ttl: float = 3.0,
        response_url_ttl: float = interactions.RESPONSE_URL_TTL,
        response_url_max_uses: int = interactions.RESPONSE_URL_MAX_USES,
        signing_secret: str | None = None,
        app_url: str | None = None,
    ) -> None:
        self.ident = Identity(
            token=token,
            team_id=team_id,
            team_domain=team_domain,
            bot_user_id=bot_user_id,
            bot_id=bot_id,
            app_id=app_id,
            bot_name=bot_name,
        )
        self.tokens = {token, *extra_tokens}
        self.app_tokens = set(app_tokens)  # app-level tokens: apps.connections.open only
        self.host, self.port = host, port
        self.ws = Workspace(self.ident)
        self.api = WebApi(self.ws, lambda: self.base_url, trigger_ttl)
        self.socket_mode = SocketModeHub(self.ident, lambda: self.base_url)
        self.api.methods["apps.connections.open"] = self.socket_mode.connections_open
        self.faults = Faults()
        self.calls: list[CallRecord] = []
        self.response_url_ttl = response_url_ttl
        self.response_url_max_uses = response_url_max_uses
        self.signing_secret = signing_secret  # for /_emulator/send/...
        self.app_url = app_url
        self._runner: web.AppRunner | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> Emulator:
        from slack_emulator.control import control_routes

        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.add_routes(
            [
                web.route("*", "/api/{method}", self._handle_api),
                web.post("/upload/v1/{file_id}", self._handle_upload),
                web.post("/response/{rid:.+}", self._handle_response_url),
                web.get("/files/{file_id}/{tail:.*}", self._handle_file_download),
                web.get(SOCKET_PATH + "{ticket}", self.socket_mode.handle),
                *control_routes(self),
            ]
        )
        app.on_shutdown.append(self.socket_mode.on_shutdown)  # the site stopped listening
        self.socket_mode.closing = False  # a restarted emulator takes connections again
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Emulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    @property
    def api_url(self) -> str:
        return self.base_url + "api/"

    # -- directory ---------------------------------------------------------------------------

    def add_channel(
        self,
        channel_id: str,
        name: str,
        members: list[str] | None = None,
        *,
        bot_member: bool = True,
        is_private: bool = False,
    ) -> None:
        """A channel; ``members=None`` lets everybody in, a list restricts it to those users."""
        self.ws.add_channel(channel_id, name, members, bot_member=bot_member, is_private=is_private)

    def set_bot_member(self, channel_id: str, member: bool) -> None:
        """Whether the bot is in the channel (not: ``not_in_channel`` on posts)."""
        self.ws.channels[channel_id].bot_member = member

    def add_user(
        self, user_id: str, name: str, real_name: str | None = None, tz: str = "Etc/UTC"
    ) -> None:
        self.ws.add_user(user_id, name, real_name, tz)

    def add_usergroup(self, group_id: str, users: list[str], handle: str | None = None) -> None:
        self.ws.add_usergroup(group_id, users, handle)

    # -- Socket Mode -------------------------------------------------------------------------

    def add_app_token(self, token: str) -> None:
        """An app-level token (``xapp-...``) ``apps.connections.open`` accepts."""
        self.app_tokens.add(token)

    async def socket_send(
        self,
        kind: str,
        payload: JSON,
        *,
        accepts_response_payload: bool | None = None,
        retry_attempt: int = 0,
        retry_reason: str = "",
    ) -> SocketEnvelope:
        """Deliver an envelope (``slash_commands``, ``interactive``, ``events_api``) to the app.

        ``accepts_response_payload`` defaults to Slack's: slash commands and view submissions.
        Returns the envelope record (``envelope_id``; later its ``ack``). LookupError when no
        Socket Mode connection is open.
        """
        return await self.socket_mode.send(
            kind,
            payload,
            accepts_response_payload=accepts_response_payload,
            retry_attempt=retry_attempt,
            retry_reason=retry_reason,
        )

    async def wait_socket_connected(self, timeout: float = 5.0) -> SocketConnection:
        """The newest open Socket Mode connection (hello sent), waiting for one if need be."""

        def newest() -> SocketConnection | None:
            connections = self.socket_mode.open_connections()
            return connections[-1] if connections else None

        return await self.wait_for(newest, timeout)

    async def wait_socket_ack(self, envelope_id: str, timeout: float = 5.0) -> SocketEnvelope:
        """The envelope once Slack knows its outcome: acked, or 3 s passed without an ack.

        Check ``acked_in_time`` / ``status``; ``elapsed`` is the ack's delay.
        """
        envelope = self.socket_mode.envelopes[envelope_id]
        return await self.wait_for(lambda: envelope if envelope.decided else None, timeout)

    def socket_envelopes(self, kind: str | None = None) -> list[SocketEnvelope]:
        return [e for e in self.socket_mode.envelopes.values() if kind is None or e.type == kind]

    async def socket_disconnect(self, reason: str = "refresh_requested") -> int:
        """Slack's ``disconnect`` message to every open connection; how many got it."""
        return await self.socket_mode.disconnect(reason)

    # -- fault modes -------------------------------------------------------------------------

    def rate_limit(
        self, method: str | None = None, retry_after: int = 1, count: int | None = None
    ) -> RateLimitRule:
        """``method`` (None: every call) answers HTTP 429 with ``Retry-After: retry_after``.

        ``count`` times, or until ``stop_rate_limit``/``clear_faults`` when None.
        """
        rule = RateLimitRule(method, retry_after, count)
        self.faults.rate_rules.append(rule)
        return rule

    def stop_rate_limit(self, method: str | None = None) -> None:
        """Switch off the rate limits of ``method`` (None: all of them)."""
        self.faults.rate_rules[:] = [
            r for r in self.faults.rate_rules if method is not None and r.method != method
        ]

    def auto_rate_limit(self, enabled: bool = True, interval: float = 1.0) -> None:
        """Slack-like limiter: another chat.postMessage (or chat.update) to the same channel
        within ``interval`` seconds answers 429."""
        self.faults.auto_interval = interval if enabled else None

    def slack_limits(
        self, enabled: bool = True, *, per_minute: Mapping[str, float] | None = None
    ) -> SlackLimits | None:
        """Slack's limits mode: each method answers 429 with ``Retry-After`` beyond its tier
        (``slack_emulator.tiers``); ``per_minute`` lowers a method's rate, as when another
        process spends the same app's budget. Returns the limits and their record of calls."""
        limits = SlackLimits(overrides=dict(per_minute or {})) if enabled else None
        self.faults.slack_limits = limits
        return limits

    def fail_all(self, status: int | None = 500, error: str = "fatal_error") -> None:
        """Every call answers HTTP ``status`` (None: back to normal)."""
        self.faults.outage = (status, error) if status is not None else None

    def fail_method(
        self, method: str, error: str = "channel_not_found", count: int | None = 1
    ) -> None:
        """``method`` answers ``{"ok": false, "error": error}``, ``count`` times.

        ``count=None``: until ``clear_faults``.
        """
        self.faults.method_faults.append(MethodFault(method, error, count))

    def clear_faults(self) -> None:
        self.faults.clear()

    def advance_time(self, seconds: float) -> None:
        """Move the emulator's clock (trigger ids, response URLs, the automatic limiter)."""
        self.ws.clock_offset += seconds

    # -- records -----------------------------------------------------------------------------

    def calls_to(self, method: str) -> list[CallRecord]:
        return [c for c in self.calls if c.method == method]

    def last_call(self, method: str | None = None) -> CallRecord | None:
        calls = self.calls if method is None else self.calls_to(method)
        return calls[-1] if calls else None

    def clear_calls(self) -> None:
        self.calls.clear()

    async def wait_for(
        self, predicate: Callable[[], T | None], timeout: float = 5.0, interval: float = 0.01
    ) -> T:
        """Poll ``predicate`` until it returns something truthy, and return that.

        Raises TimeoutError past ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError(f"condition not met within {timeout}s")
            await asyncio.sleep(interval)

    async def wait_for_call(
        self, method: str, where: Callable[[CallRecord], bool] | None = None, timeout: float = 5.0
    ) -> CallRecord:
        """The first call to ``method`` (matching ``where``), waiting for it if need be."""

        def find() -> CallRecord | None:
            return next((c for c in self.calls_to(method) if where is None or where(c)), None)

        return await self.wait_for(find, timeout)

    # -- state -------------------------------------------------------------------------------

    def messages(self, channel: str, *, include_replies: bool = True) -> list[Message]:
        """The channel's (non-ephemeral, non-deleted) messages, in order."""
        return [
            m
            for m in self.ws.visible(channel)
            if m.ephemeral_to is None and (include_replies or not m.is_reply)
        ]

    def message(self, channel: str, ts: str) -> Message | None:
        return self.ws.find_message(channel, ts, ephemeral=None)

    def thread(self, channel: str, thread_ts: str) -> list[Message]:
        """The replies of a thread (without its root)."""
        return [m for m in self.messages(channel) if m.is_reply and m.thread_ts == thread_ts]

    def ephemerals(self, channel: str, user: str | None = None) -> list[Message]:
        return [
            m
            for m in self.ws.visible(channel)
            if m.ephemeral_to is not None and (user is None or m.ephemeral_to == user)
        ]

    def view(self, view_id: str) -> View | None:
        return self.ws.views.get(view_id)

    def views(self, user: str | None = None, *, open_only: bool = False) -> list[View]:
        """The modals (App Home tabs are ``home_view``'s)."""
        homes = set(self.ws.home_views.values())
        return [
            v
            for v in self.ws.views.values()
            if (user is None or v.user_id == user)
            and not (open_only and v.closed)
            and v.id not in homes
        ]

    def home_view(self, user: str) -> View | None:
        """What ``user`` sees in rollbot's App Home tab (the last views.publish), if anything."""
        return self.ws.views.get(self.ws.home_views.get(user, ""))

    def files(self) -> list[UploadedFile]:
        return list(self.ws.files.values())

    def transcript(
        self, channel: str, include_threads: bool = True, viewer: str | None = None
    ) -> str:
        """The channel as a person reads it (ephemerals marked "(only visible to you)")."""
        return render_transcript(self.ws, channel, include_threads=include_threads, viewer=viewer)

    # -- interactivity -----------------------------------------------------------------------

    def mint_trigger_id(self, user_id: str) -> str:
        """A trigger id for ``user_id``, usable once by views.open/push within ``trigger_ttl``."""
        return self.ws.mint_trigger(user_id).id

    def mint_response_url(
        self,
        channel_id: str | None,
        user_id: str,
        *,
        message_ts: str | None = None,
        ephemeral_original: bool = False,
        thread_ts: str | None = None,
    ) -> str:
        ru = self.ws.mint_response_url(
            channel_id,
            user_id,
            message_ts=message_ts,
            ephemeral_original=ephemeral_original,
            thread_ts=thread_ts,
        )
        return f"{self.base_url}response/{ru.id}"

    def post_user_message(
        self,
        channel: str,
        user_id: str,
        text: str,
        thread_ts: str | None = None,
        *,
        blocks: list[JSON] | None = None,
        attachments: list[JSON] | None = None,
    ) -> Message:
        """A person's message in a channel (what an app_mention or a shortcut points at)."""
        if channel not in self.ws.channels:
            raise LookupError(f"no channel {channel}")
        return self.ws.post(
            channel,
            text=text,
            user=user_id,
            thread_ts=thread_ts,
            blocks=blocks,
            attachments=attachments,
            via="user",
        )

    def post_bot_message(
        self,
        channel: str,
        bot_id: str,
        username: str,
        text: str,
        *,
        blocks: list[JSON] | None = None,
        attachments: list[JSON] | None = None,
    ) -> Message:
        """Another app's bot posts (CI's "Deployed v1.2.3 to production"): a ``bot_message``."""
        if channel not in self.ws.channels:
            raise LookupError(f"no channel {channel}")
        if bot_id == self.ident.bot_id:
            raise ValueError("that is the app's own bot: post through chat.postMessage")
        return self.ws.post(
            channel,
            text=text,
            user=username,
            bot_id=bot_id,
            username=username,
            blocks=blocks,
            attachments=attachments,
            via="bot",
        )

    def apply_command_answer(self, response_url: str, body: Any, command: str = "/command") -> None:
        """Show a slash command's immediate answer as Slack does (doesn't use up the URL)."""
        payload = interactions.command_answer_payload(body)
        ru = self.ws.response_urls.get(response_url.rsplit("/response/", 1)[-1])
        if payload is not None and ru is not None:
            try:
                interactions.apply_response(self.ws, ru, payload)
            except interactions.ResponseError as e:  # e.g. invalid blocks in the answer
                self.apply_command_failure(response_url, command, e.error)

    def apply_command_failure(self, response_url: str, command: str, error: str) -> None:
        """What Slack shows the user when the app did not answer 200 within 3 seconds."""
        ru = self.ws.response_urls.get(response_url.rsplit("/response/", 1)[-1])
        if ru is not None and ru.channel_id in self.ws.channels:
            self.ws.post(
                ru.channel_id,
                text=f'{command} failed with the error "{error}"',
                user=SLACKBOT,
                ephemeral_to=ru.user_id,
                via="slackbot",
            )

    def apply_view_answer(self, view_id: str, values: JSON, body: Any) -> None:
        view = self.ws.views.get(view_id)
        if view is None:
            raise LookupError(f"no view {view_id}")
        interactions.apply_view_answer(self.ws, view, values, body)

    # -- HTTP handlers -----------------------------------------------------------------------

    def _record(self, method: str, params: JSON, answer: Answer) -> web.Response:
        self.calls.append(
            CallRecord(method, params, answer.status, answer.body, time.monotonic(), answer.headers)
        )
        return web.json_response(answer.body, status=answer.status, headers=answer.headers)

    async def _handle_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params: JSON = dict(request.query)
        try:
            params.update(await _body_params(request))
        except ValueError:
            return self._record(method, params, Answer(200, {"ok": False, "error": "invalid_json"}))
        params = decode_params(params)
        token = params.pop("token", None)
        in_header = False
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            token, in_header = auth[len("Bearer ") :].strip(), True
        canned = self.faults.check(method, params, self.ws.now())
        if canned is not None:
            return self._record(method, params, canned)
        if method not in self.api.methods:
            return self._record(
                method, params, Answer(200, {"ok": False, "error": "unknown_method"})
            )
        refusal = self._token_refusal(method, token, in_header=in_header)
        if refusal is not None:
            return self._record(method, params, Answer(200, {"ok": False, "error": refusal}))
        try:
            body = self.api.call(method, params)
        except ApiError as e:
            body = e.body()
        return self._record(method, params, Answer(200, body))

    def _token_refusal(self, method: str, token: str | None, *, in_header: bool) -> str | None:
        """Slack's error for a missing or wrong token, or None.

        A token of the wrong kind (bot token for apps.connections.open, app-level token for
        anything else) answers ``not_allowed_token_type`` as Slack does; apps.connections.open
        takes its token in the Authorization header only (as a form field: ``invalid_auth``).
        """
        if not token:
            return "not_authed"
        if method in APP_TOKEN_METHODS:
            if token in self.tokens:
                return "not_allowed_token_type"
            if token not in self.app_tokens or not in_header:
                return "invalid_auth"
            return None
        if token in self.app_tokens:
            return "not_allowed_token_type"
        if token not in self.tokens:
            return "invalid_auth"
        return None

    async def _handle_upload(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        data = await _upload_bytes(request)
        params: JSON = {"file_id": file_id, "bytes": len(data)}
        canned = self.faults.check("file_upload", params, self.ws.now())
        if canned is not None:
            self._record("file_upload", params, canned)
            return web.Response(
                status=canned.status, text=canned.body["error"], headers=canned.headers
            )
        f = self.ws.files.get(file_id)
        if f is None or f.completed:
            self._record(
                "file_upload", params, Answer(404, {"ok": False, "error": "file_not_found"})
            )
            return web.Response(status=404, text="file_not_found")
        f.content = data
        self._record("file_upload", params, Answer(200, {"ok": True}))
        return web.Response(status=200, text=f"OK - {len(data)}")

    async def _handle_file_download(self, request: web.Request) -> web.Response:
        f = self.ws.files.get(request.match_info["file_id"])
        if f is None or f.content is None:
            return web.Response(status=404, text="file_not_found")
        return web.Response(body=f.content, content_type="application/octet-stream")

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        rid = request.match_info["rid"]
        try:
            raw = await request.read()
            payload = json.loads(raw) if raw.strip() else {}
            if not isinstance(payload, dict):
                raise ValueError("not an object")
        except ValueError:
            return self._record(
                "response_url",
                {"response_url_id": rid},
                Answer(400, {"ok": False, "error": "invalid_payload"}),
            )
        params = {**payload, "response_url_id": rid}
        canned = self.faults.check("response_url", params, self.ws.now())
        if canned is not None:
            return self._record("response_url", params, canned)
        try:
            ru = interactions.use_response_url(
                self.ws, rid, self.response_url_ttl, self.response_url_max_uses
            )
            interactions.apply_response(self.ws, ru, payload)
        except interactions.ResponseError as e:
            return self._record(
                "response_url", params, Answer(e.status, {"ok": False, "error": e.error})
            )
        return self._record("response_url", params, Answer(200, {"ok": True}))


async def _body_params(request: web.Request) -> JSON:
    """The request's arguments: JSON body or form fields (files as bytes)."""
    if not request.can_read_body:
        return {}
    if request.content_type == "application/json":
        raw = await request.read()
        if not raw.strip():
            return {}
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("JSON body must be an object")
        return data
    form = await request.post()
    out: JSON = {}
    for key, value in form.items():
        out[key] = value.file.read() if isinstance(value, web.FileField) else value
    return out


async def _upload_bytes(request: web.Request) -> bytes:
    """A file upload's bytes: the raw body (slack_sdk) or the first file of a multipart form."""
    if request.content_type.startswith("multipart/"):
        form = await request.post()
        for value in form.values():
            if isinstance(value, web.FileField):
                data: bytes = value.file.read()
                return data
            if isinstance(value, str):
                return value.encode()
        return b""
    return await request.read()
