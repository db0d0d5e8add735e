"""``/_emulator/...``: the emulator's controls and records as JSON, for other processes.

Every route maps onto an ``Emulator`` method; ``EmulatorClient`` is the Python client.
``POST /_emulator/send/<kind>`` has the emulator itself send a signed request to the app
(needs ``signing_secret``; ``app_url`` from the body or the emulator's default), or, with
``"socket_mode": true``, deliver it as an envelope on the app's Socket Mode connection.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

from aiohttp import web

from slack_emulator.state import JSON, Message

if TYPE_CHECKING:
    from slack_emulator.server import Emulator

SEND_KINDS = (
    "slash_command",
    "block_action",
    "view_submission",
    "app_mention",
    "event_callback",
    "message_action",
    "app_home_opened",
    "home_action",
)


def _ok(data: JSON | None = None) -> web.Response:
    return web.json_response({"ok": True, **(data or {})})


def _missing(what: str) -> web.Response:
    return web.json_response({"ok": False, "error": f"{what} not found"}, status=404)


async def _json(request: web.Request) -> JSON:
    if not request.can_read_body:
        return {}
    data = await request.json()
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text="JSON object expected")
    return data


def message_record(emu: Emulator, msg: Message) -> JSON:
    return {
        "message": msg.to_slack(emu.ident),
        "channel": msg.channel,
        "ephemeral_to": msg.ephemeral_to,
        "deleted": msg.deleted,
        "via": msg.via,
        "metadata": msg.metadata,  # message metadata as stored (kept through edits that omit it)
        "edits": [{"text": v.text, "blocks": v.blocks, "via": v.via} for v in msg.edits],
    }


def control_routes(emu: Emulator) -> list[web.RouteDef]:
    ws = emu.ws

    async def identity(_: web.Request) -> web.Response:
        i = emu.ident
        return web.json_response(
            {
                "team_id": i.team_id,
                "team_domain": i.team_domain,
                "bot_user_id": i.bot_user_id,
                "bot_id": i.bot_id,
                "app_id": i.app_id,
                "bot_name": i.bot_name,
                "api_url": emu.api_url,
            }
        )

    async def add_channel(request: web.Request) -> web.Response:
        b = await _json(request)
        emu.add_channel(
            b["id"],
            b["name"],
            b.get("members"),
            bot_member=b.get("bot_member", True),
            is_private=b.get("is_private", False),
        )
        return _ok()

    async def get_channel(request: web.Request) -> web.Response:
        ch = ws.channels.get(request.match_info["channel"])
        return web.json_response(ch.to_slack()) if ch else _missing("channel")

    async def bot_member(request: web.Request) -> web.Response:
        b = await _json(request)
        emu.set_bot_member(request.match_info["channel"], bool(b.get("member", True)))
        return _ok()

    async def add_user(request: web.Request) -> web.Response:
        b = await _json(request)
        emu.add_user(b["id"], b["name"], b.get("real_name"), b.get("tz") or "Etc/UTC")
        return _ok()

    async def get_user(request: web.Request) -> web.Response:
        user = ws.users.get(request.match_info["user"])
        return web.json_response(user.to_slack(emu.ident.team_id)) if user else _missing("user")

    async def add_usergroup(request: web.Request) -> web.Response:
        b = await _json(request)
        emu.add_usergroup(b["id"], b["users"], b.get("handle"))
        return _ok()

    async def rate_limit(request: web.Request) -> web.Response:
        if request.method == "DELETE":
            emu.stop_rate_limit(request.query.get("method"))
            return _ok()
        b = await _json(request)
        emu.rate_limit(b.get("method"), int(b.get("retry_after", 1)), b.get("count"))
        return _ok()

    async def auto_rate_limit(request: web.Request) -> web.Response:
        b = await _json(request)
        emu.auto_rate_limit(bool(b.get("enabled", True)), float(b.get("interval", 1.0)))
        return _ok()

    async def slack_limits(request: web.Request) -> web.Response:
        if request.method == "POST":
            b = await _json(request)
            emu.slack_limits(bool(b.get("enabled", True)), per_minute=b.get("per_minute"))
            return _ok()
        limits = emu.faults.slack_limits
        if limits is None:
            return _ok({"enabled": False, "calls": [], "early": []})
        early = [[a.to_json(), b.to_json()] for a, b in limits.early_returns()]
        return _ok({"enabled": True, "calls": [c.to_json() for c in limits.calls], "early": early})

    async def fail_all(request: web.Request) -> web.Response:
        b = await _json(request) if request.method == "POST" else {"status": None}
        emu.fail_all(b.get("status", 500), str(b.get("error") or "fatal_error"))
        return _ok()

    async def fail_method(request: web.Request) -> web.Response:
        b = await _json(request)
        emu.fail_method(b["method"], b.get("error", "channel_not_found"), b.get("count", 1))
        return _ok()

    async def clear_faults(_: web.Request) -> web.Response:
        emu.clear_faults()
        return _ok()

    async def advance_time(request: web.Request) -> web.Response:
        emu.advance_time(float((await _json(request))["seconds"]))
        return _ok()

    async def calls(request: web.Request) -> web.Response:
        if request.method == "DELETE":
            emu.clear_calls()
            return _ok()
        method = request.query.get("method")
        records = emu.calls if method is None else emu.calls_to(method)
        return _ok({"calls": [c.to_json() for c in records]})

    async def messages(request: web.Request) -> web.Response:
        channel = request.match_info["channel"]
        if request.method == "POST":
            b = await _json(request)
            extra = {"blocks": b.get("blocks"), "attachments": b.get("attachments")}
            try:
                if b.get("bot_id"):  # another app's bot (CI)
                    msg = emu.post_bot_message(
                        channel, b["bot_id"], b.get("username") or "bot", b["text"], **extra
                    )
                else:
                    msg = emu.post_user_message(
                        channel, b["user_id"], b["text"], b.get("thread_ts"), **extra
                    )
            except LookupError:
                return _missing("channel")
            return _ok({"ts": msg.ts})
        with_ephemeral = request.query.get("include_ephemeral", "1") == "1"
        found = [m for m in ws.visible(channel) if with_ephemeral or m.ephemeral_to is None]
        return _ok({"messages": [message_record(emu, m) for m in found]})

    async def one_message(request: web.Request) -> web.Response:
        msg = emu.message(request.match_info["channel"], request.match_info["ts"])
        return web.json_response(message_record(emu, msg)) if msg else _missing("message")

    async def view(request: web.Request) -> web.Response:
        v = emu.view(request.match_info["view"])
        if v is None:
            return _missing("view")
        return web.json_response(
            {
                "view": v.to_slack(emu.ident),
                "user_id": v.user_id,
                "closed": v.closed,
                "errors": v.errors,
                "problems": v.problems,
                "submissions": v.submissions,
            }
        )

    async def home(request: web.Request) -> web.Response:
        v = emu.home_view(request.match_info["user"])
        if v is None:
            return _missing("home view")
        return web.json_response(
            {"view": v.to_slack(emu.ident), "user_id": v.user_id, "published": len(v.history) + 1}
        )

    async def view_answer(request: web.Request) -> web.Response:
        b = await _json(request)
        try:
            emu.apply_view_answer(request.match_info["view"], b.get("values") or {}, b.get("body"))
        except LookupError:
            return _missing("view")
        return _ok()

    async def triggers(request: web.Request) -> web.Response:
        return _ok({"trigger_id": emu.mint_trigger_id((await _json(request))["user_id"])})

    async def response_urls(request: web.Request) -> web.Response:
        b = await _json(request)
        url = emu.mint_response_url(
            b.get("channel_id"),
            b["user_id"],
            message_ts=b.get("message_ts"),
            ephemeral_original=bool(b.get("ephemeral_original")),
            thread_ts=b.get("thread_ts"),
        )
        return _ok({"response_url": url})

    async def command_answer(request: web.Request) -> web.Response:
        b = await _json(request)
        emu.apply_command_answer(b["response_url"], b.get("body"), b.get("command") or "/command")
        return _ok()

    async def command_failure(request: web.Request) -> web.Response:
        b = await _json(request)
        emu.apply_command_failure(b["response_url"], b["command"], b["error"])
        return _ok()

    async def files(_: web.Request) -> web.Response:
        return _ok({"files": [f.to_record() for f in emu.files()]})

    async def transcript(request: web.Request) -> web.Response:
        text = emu.transcript(
            request.match_info["channel"],
            include_threads=request.query.get("threads", "1") == "1",
            viewer=request.query.get("viewer"),
        )
        return web.Response(text=text, content_type="text/plain")

    async def send(request: web.Request) -> web.Response:
        from slack_emulator.sender import SentRequest, SlackSender

        kind = request.match_info["kind"]
        b = await _json(request)
        app_url = b.pop("app_url", None) or emu.app_url
        sender: SlackSender
        if b.pop("socket_mode", False):  # an envelope on the app's Socket Mode connection
            from slack_emulator.socket_mode import SocketModeSender

            sender = SocketModeSender(emu)
        elif emu.signing_secret is None or app_url is None:
            raise web.HTTPBadRequest(
                text="the emulator needs a signing secret and an app URL to send"
            )
        else:
            sender = SlackSender(app_url, emu.signing_secret, emu, team_id=emu.ident.team_id)
        if kind == "replay":
            result = await sender.replay(SentRequest.from_json(b["request"]))
        elif kind in SEND_KINDS:
            method = getattr(sender, kind)
            accepted = inspect.signature(method).parameters
            unknown = [k for k in b if k not in accepted and k not in _SEND_OPTIONS]
            if unknown:
                raise web.HTTPBadRequest(text=f"unknown arguments: {unknown}")
            result = await method(**b)
        else:
            raise web.HTTPNotFound(text=f"no such kind: {kind}")
        envelope = getattr(result, "envelope", None)  # Socket Mode: the envelope and its ack
        extra = {"envelope": envelope.to_json()} if envelope is not None else {}
        return web.json_response({**result.to_json(), **extra})

    p = "/_emulator/"
    return [
        web.get(p + "identity", identity),
        web.post(p + "channels", add_channel),
        web.get(p + "channels/{channel}", get_channel),
        web.post(p + "channels/{channel}/bot_member", bot_member),
        web.post(p + "users", add_user),
        web.get(p + "users/{user}", get_user),
        web.post(p + "usergroups", add_usergroup),
        web.route("*", p + "rate_limit", rate_limit),
        web.post(p + "auto_rate_limit", auto_rate_limit),
        web.route("*", p + "slack_limits", slack_limits),
        web.route("*", p + "fail_all", fail_all),
        web.post(p + "fail_method", fail_method),
        web.post(p + "clear_faults", clear_faults),
        web.post(p + "advance_time", advance_time),
        web.route("*", p + "calls", calls),
        web.route("*", p + "messages/{channel}", messages),
        web.get(p + "messages/{channel}/{ts}", one_message),
        web.get(p + "views/{view}", view),
        web.post(p + "views/{view}/answer", view_answer),
        web.get(p + "home/{user}", home),
        web.post(p + "triggers", triggers),
        web.post(p + "response_urls", response_urls),
        web.post(p + "response_urls/answer", command_answer),
        web.post(p + "response_urls/failure", command_failure),
        web.get(p + "files", files),
        web.get(p + "transcript/{channel}", transcript),
        web.post(p + "send/{kind}", send),
    ]


_SEND_OPTIONS = ("timestamp", "signature", "bad_signature", "retry_num", "retry_reason", "timeout")

__all__ = ["control_routes", "message_record"]
