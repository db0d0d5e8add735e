"""The emulated Web API methods: Slack's arguments in, Slack's answers and error names out."""

from __future__ import annotations

import copy
import json
import secrets
import string
import time
from collections.abc import Callable, Mapping
from typing import Any

from slack_emulator.limits import block_kit_problems, message_text_problems, modal_view_problems
from slack_emulator.state import JSON, Channel, Message, UploadedFile, View, Workspace

# Arguments Slack takes as JSON-encoded strings in form posts.
JSON_FIELDS = ("blocks", "attachments", "view", "metadata", "files")
MAX_MODAL_STACK = 3  # views.push: a modal holds at most three views


class ApiError(Exception):
    """An ``{"ok": false, "error": ...}`` answer."""

    def __init__(self, error: str, messages: list[str] | None = None, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.messages = messages or []
        self.extra = extra

    def body(self) -> JSON:
        out: JSON = {"ok": False, "error": self.error, **self.extra}
        if self.messages:
            out["response_metadata"] = {"messages": self.messages}
        return out


def decode_params(params: Mapping[str, Any]) -> JSON:
    """Decode the form fields Slack reads as JSON (blocks, view, ...); keep undecodable text."""
    out = dict(params)
    for key in JSON_FIELDS:
        value = out.get(key)
        if isinstance(value, str) and value.strip():
            try:
                out[key] = json.loads(value)
            except ValueError:
                pass
    return out


def _text(params: JSON, key: str) -> str | None:
    value = params.get(key)
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)


def _required(params: JSON, key: str, error: str | None = None) -> str:
    value = _text(params, key)
    if value is None:
        if error:
            raise ApiError(error)
        raise ApiError("invalid_arguments", [f"[ERROR] missing required field: {key}"])
    return value


def _short_id() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(5))


def fill_ids(blocks: list[JSON]) -> list[JSON]:
    """A copy with the block_id/action_id Slack generates where the app gave none."""
    out = copy.deepcopy(blocks)
    for block in out:
        if not isinstance(block, dict):
            continue
        block.setdefault("block_id", _short_id())
        elements: list[Any] = (
            list(block.get("elements") or []) if block.get("type") == "actions" else []
        )
        for key in ("accessory", "element"):
            if isinstance(block.get(key), dict):
                elements.append(block[key])
        for el in elements:
            if isinstance(el, dict) and el.get("type") != "image":
                el.setdefault("action_id", _short_id())
    return out


class WebApi:
    """Dispatches ``method`` to its handler; each returns the fields added to ``{"ok": true}``."""

    def __init__(self, ws: Workspace, base_url: Callable[[], str], trigger_ttl: float) -> None:
        self.ws = ws
        self.base_url = base_url
        self.trigger_ttl = trigger_ttl
        self.methods: dict[str, Callable[[JSON], JSON]] = {
            "auth.test": self.auth_test,
            "chat.postMessage": self.chat_post_message,
            "chat.update": self.chat_update,
            "chat.delete": self.chat_delete,
            "chat.postEphemeral": self.chat_post_ephemeral,
            "chat.getPermalink": self.chat_get_permalink,
            "views.open": self.views_open,
            "views.push": self.views_push,
            "views.update": self.views_update,
            "usergroups.users.list": self.usergroups_users_list,
            "conversations.info": self.conversations_info,
            "users.info": self.users_info,
            "files.getUploadURLExternal": self.files_get_upload_url_external,
            "files.completeUploadExternal": self.files_complete_upload_external,
        }

    def call(self, method: str, params: JSON) -> JSON:
        handler = self.methods.get(method)
        if handler is None:
            raise ApiError("unknown_method")
        return {"ok": True, **handler(params)}

    # -- helpers ---------------------------------------------------------------------------

    def _channel(self, params: JSON, *, by_name: bool = False) -> Channel:
        ref = _required(params, "channel", "channel_not_found")
        ch = self.ws.resolve_channel(ref, by_name=by_name)
        if ch is None:
            raise ApiError("channel_not_found")
        return ch

    @staticmethod
    def _content(params: JSON, *, required: bool = True) -> tuple[str | None, list[JSON] | None]:
        """text and blocks, checked like Slack: no_text, msg_too_long, invalid_blocks."""
        text = params.get("text")
        if text is not None and not isinstance(text, str):
            text = str(text)
        blocks = params.get("blocks")
        if isinstance(blocks, str) and blocks.strip() == "":
            blocks = None
        if blocks is not None and not isinstance(blocks, list):
            raise ApiError("invalid_blocks_format")
        if required and not text and not blocks and not params.get("attachments"):
            raise ApiError("no_text")
        if message_text_problems(text):
            raise ApiError("msg_too_long")
        if blocks:
            problems = block_kit_problems(blocks, surface="message")
            if problems:
                raise ApiError("invalid_blocks", problems, errors=problems)
            blocks = fill_ids(blocks)
        return text, blocks

    def _message_json(self, msg: Message) -> JSON:
        return msg.to_slack(self.ws.ident)

    # -- auth, directory -------------------------------------------------------------------

    def auth_test(self, params: JSON) -> JSON:
        ident = self.ws.ident
        return {
            "url": f"https://{ident.team_domain}.slack.com/",
            "team": ident.team_name,
            "user": ident.bot_name,
            "team_id": ident.team_id,
            "user_id": ident.bot_user_id,
            "bot_id": ident.bot_id,
            "app_id": ident.app_id,
            "is_enterprise_install": False,
        }

    def usergroups_users_list(self, params: JSON) -> JSON:
        group = self.ws.usergroups.get(_required(params, "usergroup", "no_such_subteam"))
        if group is None:
            raise ApiError("no_such_subteam")
        return {"users": list(group.users)}

    def conversations_info(self, params: JSON) -> JSON:
        return {"channel": self._channel(params).to_slack()}

    def users_info(self, params: JSON) -> JSON:
        user = self.ws.users.get(_required(params, "user", "user_not_found"))
        if user is None:
            raise ApiError("user_not_found")
        return {"user": user.to_slack(self.ws.ident.team_id)}

    # -- chat --------------------------------------------------------------------------------

    def chat_post_message(self, params: JSON) -> JSON:
        ch = self._channel(params, by_name=True)
        if not ch.bot_member:
            raise ApiError("not_in_channel")
        text, blocks = self._content(params)
        ident = self.ws.ident
        msg = self.ws.post(
            ch.id,
            text=text or "",
            blocks=blocks,
            user=ident.bot_user_id,
            bot_id=ident.bot_id,
            thread_ts=_text(params, "thread_ts"),
            metadata=params.get("metadata") if isinstance(params.get("metadata"), dict) else None,
            attachments=params.get("attachments")
            if isinstance(params.get("attachments"), list)
            else None,
        )
        return {"channel": ch.id, "ts": msg.ts, "message": self._message_json(msg)}

    def chat_update(self, params: JSON) -> JSON:
        ch = self._channel(params)
        ts = _required(params, "ts", "message_not_found")
        msg = self.ws.find_message(ch.id, ts)
        if msg is None:
            raise ApiError("message_not_found")
        if msg.user != self.ws.ident.bot_user_id:
            raise ApiError("cant_update_message")
        text, blocks = self._content(params)
        new_blocks = msg.blocks if "blocks" not in params else blocks  # omitted: kept
        new_text = text if text is not None else msg.text
        msg.replace(new_text, new_blocks, at=self.ws.now(), via="chat.update", ts=self.ws.new_ts())
        if isinstance(params.get("metadata"), dict):
            msg.metadata = params["metadata"] or None
        return {
            "channel": ch.id,
            "ts": msg.ts,
            "text": msg.text,
            "message": self._message_json(msg),
        }

    def chat_delete(self, params: JSON) -> JSON:
        ch = self._channel(params)
        msg = self.ws.find_message(ch.id, _required(params, "ts", "message_not_found"))
        if msg is None:
            raise ApiError("message_not_found")
        if msg.user != self.ws.ident.bot_user_id:
            raise ApiError("cant_delete_message")
        msg.deleted = True
        return {"channel": ch.id, "ts": msg.ts}

    def chat_get_permalink(self, params: JSON) -> JSON:
        """A message's permalink, shaped like Slack's (``/archives/<channel>/p<ts digits>``)."""
        ch = self._channel(params)
        ts = _required(params, "message_ts", "message_not_found")
        msg = self.ws.find_message(ch.id, ts)
        if msg is None:
            raise ApiError("message_not_found")
        domain = self.ws.ident.team_domain
        link = f"https://{domain}.slack.com/archives/{ch.id}/p{ts.replace('.', '')}"
        if msg.thread_ts and msg.thread_ts != msg.ts:
            link += f"?thread_ts={msg.thread_ts}&cid={ch.id}"
        return {"channel": ch.id, "permalink": link}

    def chat_post_ephemeral(self, params: JSON) -> JSON:
        ch = self._channel(params, by_name=True)
        user = _required(params, "user", "user_not_in_channel")
        if not ch.bot_member:
            raise ApiError("not_in_channel")
        if not ch.has_member(user):
            raise ApiError("user_not_in_channel")
        text, blocks = self._content(params)
        msg = self.ws.post(
            ch.id,
            text=text or "",
            blocks=blocks,
            user=self.ws.ident.bot_user_id,
            bot_id=self.ws.ident.bot_id,
            thread_ts=_text(params, "thread_ts"),
            ephemeral_to=user,
            via="chat.postEphemeral",
        )
        return {"message_ts": msg.ts}

    # -- views -------------------------------------------------------------------------------

    def _exchange_trigger(self, params: JSON) -> str:
        trigger = self.ws.triggers.get(_required(params, "trigger_id", "invalid_trigger_id"))
        if trigger is None:
            raise ApiError("invalid_trigger_id")
        if trigger.exchanged:
            raise ApiError("exchanged_trigger_id")
        if self.ws.now() - trigger.issued_at > self.trigger_ttl:
            raise ApiError("expired_trigger_id")
        trigger.exchanged = True
        return trigger.user_id

    def _view_payload(self, params: JSON) -> JSON:
        view = params.get("view")
        if not isinstance(view, dict):
            raise ApiError(
                "invalid_arguments",
                ["[ERROR] failed to match all allowed schemas [json-pointer:/view]"],
            )
        problems = modal_view_problems(view)
        if problems:
            raise ApiError("invalid_arguments", problems)
        external_id = view.get("external_id")
        if external_id and any(
            v.payload.get("external_id") == external_id and not v.closed
            for v in self.ws.views.values()
        ):
            raise ApiError("duplicate_external_id")
        payload = copy.deepcopy(view)
        payload["blocks"] = fill_ids(view.get("blocks", []))
        return payload

    def _new_view(
        self, user_id: str, payload: JSON, previous: str | None, root: str | None
    ) -> View:
        view_id = self.ws.new_id("V")
        view = View(
            id=view_id,
            user_id=user_id,
            payload=payload,
            hash=f"{int(time.time())}.{self.ws.new_secret()[:8]}",
            root_view_id=root or view_id,
            previous_view_id=previous,
        )
        self.ws.views[view_id] = view
        return view

    def views_open(self, params: JSON) -> JSON:
        user_id = self._exchange_trigger(params)
        payload = self._view_payload(params)
        for old in self.ws.modal_stacks.get(user_id, []):
            self.ws.views[old].closed = True
        view = self._new_view(user_id, payload, None, None)
        self.ws.modal_stacks[user_id] = [view.id]
        return {"view": view.to_slack(self.ws.ident)}

    def views_push(self, params: JSON) -> JSON:
        user_id = self._exchange_trigger(params)
        payload = self._view_payload(params)
        stack = self.ws.modal_stacks.setdefault(user_id, [])
        if len(stack) >= MAX_MODAL_STACK:
            raise ApiError("push_limit_reached")
        top = stack[-1] if stack else None
        view = self._new_view(user_id, payload, top, stack[0] if stack else None)
        stack.append(view.id)
        return {"view": view.to_slack(self.ws.ident)}

    def views_update(self, params: JSON) -> JSON:
        view_id, external_id = _text(params, "view_id"), _text(params, "external_id")
        if view_id is None and external_id is None:
            raise ApiError("invalid_arguments", ["[ERROR] view_id or external_id is required"])
        view = (
            self.ws.views.get(view_id)
            if view_id
            else next(
                (v for v in self.ws.views.values() if v.payload.get("external_id") == external_id),
                None,
            )
        )
        if view is None or view.closed:
            raise ApiError("not_found")
        given_hash = _text(params, "hash")
        if given_hash is not None and given_hash != view.hash:
            raise ApiError("hash_conflict")
        new = params.get("view")
        if isinstance(new, dict) and new.get("external_id") == view.payload.get("external_id"):
            new = {k: v for k, v in new.items() if k != "external_id"}
        payload = self._view_payload({"view": new})
        if view.payload.get("external_id") and "external_id" not in payload:
            payload["external_id"] = view.payload["external_id"]
        self.replace_view(view, payload)
        return {"view": view.to_slack(self.ws.ident)}

    def replace_view(self, view: View, payload: JSON) -> None:
        view.history.append(view.payload)
        view.payload = payload
        view.hash = f"{int(time.time())}.{self.ws.new_secret()[:8]}"

    # -- files (upload v2) -------------------------------------------------------------------

    def files_get_upload_url_external(self, params: JSON) -> JSON:
        filename = _required(params, "filename")
        raw_length = params.get("length")
        try:
            length = int(raw_length) if raw_length is not None else 0
        except (TypeError, ValueError):
            raise ApiError("invalid_arguments", ["[ERROR] length must be an integer"]) from None
        if length <= 0:
            raise ApiError("missing_argument")
        file_id = self.ws.new_id("F")
        self.ws.files[file_id] = UploadedFile(
            id=file_id,
            name=filename,
            length=length,
            created=int(time.time()),
            alt_txt=_text(params, "alt_txt") or _text(params, "alt_text"),
            snippet_type=_text(params, "snippet_type"),
        )
        return {"upload_url": f"{self.base_url()}upload/v1/{file_id}", "file_id": file_id}

    def files_complete_upload_external(self, params: JSON) -> JSON:
        entries = params.get("files")
        if not isinstance(entries, list) or not entries:
            raise ApiError("invalid_arguments", ["[ERROR] missing required field: files"])
        files: list[UploadedFile] = []
        for entry in entries:
            f = self.ws.files.get(entry.get("id", "")) if isinstance(entry, dict) else None
            if f is None or f.content is None or f.completed:
                raise ApiError("file_not_found")
            files.append(f)
        channel_ids = [c for c in [_text(params, "channel_id")] if c]
        if not channel_ids and _text(params, "channels"):
            channel_ids = str(params["channels"]).split(",")
        channels: list[Channel] = []
        for cid in channel_ids:
            ch = self.ws.resolve_channel(cid)
            if ch is None:
                raise ApiError("invalid_channel")
            if not ch.bot_member:
                raise ApiError("posting_to_channel_denied")
            channels.append(ch)
        thread_ts = _text(params, "thread_ts")
        comment = _text(params, "initial_comment")
        for f, entry in zip(files, entries, strict=True):
            f.title = entry.get("title") or f.name
            f.completed = True
            f.initial_comment = comment
        base, ident = self.base_url(), self.ws.ident
        for ch in channels:
            for f in files:
                f.channel, f.thread_ts = ch.id, thread_ts
            msg = self.ws.post(
                ch.id,
                text=comment or "",
                user=ident.bot_user_id,
                bot_id=ident.bot_id,
                thread_ts=thread_ts,
                files=[f.to_slack(ident, base) for f in files],
                via="files.completeUploadExternal",
            )
            for f in files:
                f.message_ts = msg.ts
        return {"files": [f.to_slack(ident, base) for f in files]}
