"""A channel as a person reads it: plain text, blocks rendered, threads indented.

    rollbot: Rolling back *api* to v1.2.2
      # Rollback plan
      Current: v1.2.3 | Target: v1.2.2
      [Roll back to v1.2.2] [Cancel]
        ↳ rollbot: step 1/4 done (edited)
      rollbot → alice (only visible to you): You are not on call.

Blocks replace a message's ``text`` (Slack shows ``text`` only as the notification
fallback). Mentions are resolved to names (``<@U0ALICE>`` → ``@alice``), links to their
labels; mrkdwn markers (``*bold*``) are kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from slack_emulator.state import Message, Workspace

_MENTION = re.compile(r"<([@#!])([^>|]+)(?:\|([^>]*))?>")
_LINK = re.compile(r"<([^@#!][^>|]*)(?:\|([^>]*))?>")


def plain(ws: Workspace, text: str) -> str:
    """Slack markup → what a reader sees: mentions by name, links by label, entities decoded."""

    def mention(m: re.Match[str]) -> str:
        sigil, ref, label = m.group(1), m.group(2), m.group(3)
        if sigil == "@":
            return f"@{ws.user_name(ref)}"
        if sigil == "#":
            ch = ws.channels.get(ref)
            return f"#{label or (ch.name if ch else ref)}"
        if ref.startswith("subteam^"):
            group = ws.usergroups.get(ref.split("^", 1)[1])
            return label or f"@{group.handle if group else ref}"
        return label or f"@{ref}"

    text = _MENTION.sub(mention, text)
    text = _LINK.sub(lambda m: m.group(2) or m.group(1), text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _text(ws: Workspace, obj: object) -> str:
    if isinstance(obj, Mapping):
        value = obj.get("text")
        return plain(ws, value) if isinstance(value, str) else ""
    return plain(ws, obj) if isinstance(obj, str) else ""


def _element(ws: Workspace, el: object) -> str:
    if not isinstance(el, Mapping):
        return ""
    kind = el.get("type")
    if kind == "button":
        return f"[{_text(ws, el.get('text'))}]"
    if kind == "image":
        return f"[image: {el.get('alt_text', '')}]"
    if kind == "overflow":
        return "[⋯]"
    if kind in ("plain_text", "mrkdwn"):
        return _text(ws, el)
    placeholder = _text(ws, el.get("placeholder"))
    label = str(kind).replace("_", " ")
    return f"[{label}: {placeholder}]" if placeholder else f"[{label}]"


def _rich_text(ws: Workspace, node: object) -> str:
    if isinstance(node, Mapping):
        if node.get("type") in ("text", "link"):
            return str(node.get("text") or node.get("url") or "")
        if node.get("type") == "user":
            return f"@{ws.user_name(str(node.get('user_id')))}"
        if node.get("type") == "emoji":
            return f":{node.get('name')}:"
        return _rich_text(ws, node.get("elements", []))
    if isinstance(node, list):
        return "".join(_rich_text(ws, n) for n in node)
    return ""


def render_block(ws: Workspace, block: Mapping[str, Any]) -> list[str]:
    kind = block.get("type")
    if kind == "header":
        return [f"# {_text(ws, block.get('text'))}"]
    if kind == "section":
        lines = _text(ws, block.get("text")).splitlines() if block.get("text") else []
        fields = block.get("fields") or []
        if fields:
            lines.append(" | ".join(" ".join(_text(ws, f).split("\n")) for f in fields))
        if block.get("accessory"):
            lines.append(_element(ws, block["accessory"]))
        return lines
    if kind == "context":
        return [" · ".join(_element(ws, e) for e in block.get("elements", []))]
    if kind == "actions":
        return [" ".join(_element(ws, e) for e in block.get("elements", []))]
    if kind == "divider":
        return ["---"]
    if kind == "image":
        return [f"[image: {block.get('alt_text', '')}]"]
    if kind == "input":
        return [f"{_text(ws, block.get('label'))}: {_element(ws, block.get('element'))}"]
    if kind == "markdown":
        return str(block.get("text", "")).splitlines()
    if kind == "rich_text":
        return _rich_text(ws, block.get("elements", [])).splitlines()
    return [f"[{kind} block]"]


def render_message(ws: Workspace, msg: Message) -> list[str]:
    """The lines of one message: author line first, then its body lines."""
    if msg.blocks:
        body = [line for b in msg.blocks if isinstance(b, Mapping) for line in render_block(ws, b)]
    else:
        body = plain(ws, msg.text).splitlines()
    for f in msg.files:
        body.append(
            f"[file: {f.get('name')}"
            + (f" — {f['title']}" if f.get("title") != f.get("name") else "")
            + "]"
        )
    author = ws.user_name(msg.user)
    if msg.ephemeral_to:
        author += f" → {ws.user_name(msg.ephemeral_to)} (only visible to you)"
    suffix = " (edited)" if msg.edits else ""
    if not body:
        return [f"{author}:{suffix}"]
    if len(body) == 1 and not msg.blocks:
        return [f"{author}: {body[0]}{suffix}"]
    return [f"{author}:{suffix}", *(f"  {line}" for line in body)]


def transcript(
    ws: Workspace, channel: str, *, include_threads: bool = True, viewer: str | None = None
) -> str:
    """The channel as a person reads it (``viewer``: only that user's ephemerals)."""
    msgs = [
        m
        for m in ws.visible(channel)
        if m.ephemeral_to is None or viewer is None or m.ephemeral_to == viewer
    ]
    roots = [m for m in msgs if not m.is_reply]
    replies: dict[str, list[Message]] = {}
    for m in msgs:
        if m.is_reply and m.thread_ts:
            replies.setdefault(m.thread_ts, []).append(m)
    root_ts = {m.ts for m in roots}
    orphans = [m for ts, ms in replies.items() if ts not in root_ts for m in ms]
    lines: list[str] = []
    for m in sorted([*roots, *orphans], key=lambda m: m.ts):
        lines.extend(render_message(ws, m))
        if include_threads:
            lines.extend(_indent(render_message(ws, r) for r in replies.get(m.ts, [])))
    return "\n".join(lines)


def _indent(rendered: Iterable[list[str]]) -> list[str]:
    out: list[str] = []
    for lines in rendered:
        out.append(f"    ↳ {lines[0]}")
        out.extend(f"      {line}" for line in lines[1:])
    return out
