"""A Slack message as the text a person reads: its text, its blocks and its attachments.

CI bots often put the deploy in blocks or in a legacy attachment, with an empty or generic
``text``; the message shortcut reads all of it. Links keep their label only (``<url|v1.2.3>`` →
``v1.2.3``): a compare URL (``…/compare/v1.2.2...v1.2.3``) must not name a second version.
"""

from __future__ import annotations

import re
from typing import Any

_LINK = re.compile(r"<([^<>|]*)\|([^<>]*)>")
_BARE_LINK = re.compile(r"<((?:https?|mailto):[^<>|]*)>")
_ATTACHMENT_FIELDS = ("pretext", "author_name", "title", "text", "footer")


def message_text(message: dict[str, Any]) -> str:
    """Everything readable in ``message``, one part per line, Slack's link markup resolved."""
    parts = [str(message.get("text") or "")]
    parts += _blocks_text(message.get("blocks"))
    for attachment in message.get("attachments") or []:
        if not isinstance(attachment, dict):
            continue
        parts += [str(attachment[k]) for k in _ATTACHMENT_FIELDS if attachment.get(k)]
        if not any(attachment.get(k) for k in ("text", "title", "pretext")):
            parts.append(str(attachment.get("fallback") or ""))
        for f in attachment.get("fields") or []:
            if isinstance(f, dict):
                parts.append(f"{f.get('title', '')}: {f.get('value', '')}")
        parts += _blocks_text(attachment.get("blocks"))
    return "\n".join(_resolve_links(p) for p in parts if p.strip())


def _resolve_links(text: str) -> str:
    # Slack escapes these three in message text: "v1.2.2 -&gt; v1.2.3" is an arrow.
    text = _BARE_LINK.sub(r"\1", _LINK.sub(r"\2", text))
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _blocks_text(blocks: Any) -> list[str]:
    if not isinstance(blocks, list):
        return []
    out: list[str] = []
    for block in blocks:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "rich_text":
            out += [_rich(e) for e in block.get("elements") or []]
            continue
        out += [_text_of(block.get("text")), *(_text_of(f) for f in block.get("fields") or [])]
        if block.get("type") == "context":
            out += [_text_of(e) for e in block.get("elements") or []]
    return [t for t in out if t]


def _text_of(obj: Any) -> str:
    """A text object's text (``plain_text``/``mrkdwn``), or "" for anything else."""
    if isinstance(obj, dict) and isinstance(obj.get("text"), str):
        return str(obj["text"])
    return ""


def _rich(element: Any) -> str:
    """A rich-text element: sections and lists joined, their pieces run together as shown."""
    if not isinstance(element, dict):
        return ""
    kind = element.get("type")
    if kind in ("text", "link") or "elements" not in element:
        if kind == "link":
            return str(element.get("text") or element.get("url") or "")
        if kind == "emoji":
            return f":{element.get('name', '')}:"
        return str(element.get("text") or "")
    inner = [_rich(e) for e in element.get("elements") or []]
    joiner = "\n" if kind in ("rich_text_list", "rich_text_quote_list") else ""
    return joiner.join(inner)
