"""What Slack does with an app's answers to interactions.

- ``response_url`` posts (and a slash command's immediate JSON answer, which Slack treats
  the same way): ephemeral to the user by default, ``in_channel`` as a message,
  ``replace_original`` / ``delete_original`` on the message whose button was clicked.
- ``view_submission`` answers: ``errors`` keeps the modal open, ``update``/``push``/``clear``
  change the modal stack, an empty 200 closes the submitted view.

Response URLs live 30 minutes and take 5 posts (Slack: "up to 5 times within 30 minutes").
Slack does not document what an exhausted URL answers; the emulator answers HTTP 404
``{"ok": false, "error": "expired_url"}`` past 30 minutes (or for an unknown URL) and
``used_url`` past the fifth use.
"""

from __future__ import annotations

import copy
from typing import Any

from slack_emulator.limits import block_kit_problems, modal_view_problems
from slack_emulator.state import JSON, ResponseUrl, View, Workspace
from slack_emulator.webapi import MAX_MODAL_STACK, fill_ids

RESPONSE_URL_TTL = 30 * 60.0
RESPONSE_URL_MAX_USES = 5


class ResponseError(Exception):
    """A refused response_url post: HTTP status and Slack's error name."""

    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error


def use_response_url(ws: Workspace, rid: str, ttl: float, max_uses: int) -> ResponseUrl:
    ru = ws.response_urls.get(rid)
    if ru is None or ws.now() - ru.issued_at > ttl:
        raise ResponseError(404, "expired_url")
    if ru.uses >= max_uses:
        raise ResponseError(404, "used_url")
    ru.uses += 1
    return ru


def apply_response(ws: Workspace, ru: ResponseUrl, payload: JSON) -> None:
    """Apply a response_url payload (or a slash command's immediate answer) to the channel."""
    channel = ru.channel_id
    original = None
    if channel and ru.message_ts:
        original = ws.find_message(channel, ru.message_ts, ephemeral=ru.ephemeral_original)
    if _flag(payload.get("delete_original")):
        if original is not None:
            original.deleted = True
        return
    text = payload.get("text")
    text = text if isinstance(text, str) else ""
    blocks = payload.get("blocks")
    if blocks is not None and not isinstance(blocks, list):
        raise ResponseError(400, "invalid_blocks_format")
    if not text and not blocks:
        raise ResponseError(400, "no_text")
    if blocks:
        if block_kit_problems(blocks):
            raise ResponseError(400, "invalid_blocks")
        blocks = fill_ids(blocks)
    if _flag(payload.get("replace_original")) and original is not None:
        original.replace(text, blocks or None, at=ws.now(), via="response_url", ts=ws.new_ts())
        return
    if channel is None or channel not in ws.channels:
        raise ResponseError(404, "channel_not_found")
    ident = ws.ident
    in_channel = payload.get("response_type") == "in_channel"
    thread_ts = payload.get("thread_ts") or ru.thread_ts
    ws.post(
        channel,
        text=text,
        blocks=blocks or None,
        user=ident.bot_user_id,
        bot_id=ident.bot_id,
        thread_ts=thread_ts if isinstance(thread_ts, str) else None,
        ephemeral_to=None if in_channel else ru.user_id,
        via="response_url",
    )


def command_answer_payload(body: Any) -> JSON | None:
    """A slash command's immediate HTTP answer as a response payload (None: nothing shown)."""
    if isinstance(body, dict):
        return body if (body.get("text") or body.get("blocks")) else None
    if isinstance(body, str) and body.strip():
        return {"text": body}
    return None


def apply_view_answer(ws: Workspace, view: View, values: JSON, body: Any) -> None:
    """What Slack does after a view_submission was answered (in time, with HTTP 200)."""
    view.state_values = copy.deepcopy(values)
    view.submissions.append(copy.deepcopy(values))
    answer = body if isinstance(body, dict) else {}
    action = answer.get("response_action")
    stack = ws.modal_stacks.setdefault(view.user_id, [])
    if action == "errors":
        view.errors = answer.get("errors") if isinstance(answer.get("errors"), dict) else {}
        return
    view.errors = None
    if action in ("update", "push"):
        new = answer.get("view")
        problems = modal_view_problems(new)
        if problems or not isinstance(new, dict):
            view.problems = problems or ["[ERROR] missing view"]
            return
        payload = copy.deepcopy(new)
        payload["blocks"] = fill_ids(new.get("blocks", []))
        if action == "update":
            view.history.append(view.payload)
            view.payload = payload
            return
        if len(stack) >= MAX_MODAL_STACK:
            view.problems = ["push_limit_reached"]
            return
        pushed_id = ws.new_id("V")
        ws.views[pushed_id] = View(
            id=pushed_id,
            user_id=view.user_id,
            payload=payload,
            hash=view.hash,
            root_view_id=view.root_view_id,
            previous_view_id=view.id,
        )
        stack.append(pushed_id)
        return
    if action == "clear":
        for vid in stack:
            ws.views[vid].closed = True
        stack.clear()
        return
    view.closed = True  # plain acknowledgement: the submitted view closes
    if view.id in stack:
        stack.remove(view.id)


def _flag(value: object) -> bool:
    return value is True or value in ("true", "1", 1)


__all__ = [
    "RESPONSE_URL_MAX_USES",
    "RESPONSE_URL_TTL",
    "ResponseError",
    "apply_response",
    "apply_view_answer",
    "command_answer_payload",
    "use_response_url",
]
