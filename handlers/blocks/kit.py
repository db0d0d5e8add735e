"""Block Kit primitives every message is made of: text, sections, buttons, icons, escaping."""

from __future__ import annotations

from typing import Any

from bot.model import RunStatus, StepStatus
from handlers.grammar import HELP
from handlers.ids import Action, Block

Blocks = list[dict[str, Any]]
SECTION_LIMIT = 3000
STEP_ICON = {
    StepStatus.PENDING: "⬜", StepStatus.RUNNING: "⏳", StepStatus.SUCCEEDED: "✅",
    StepStatus.FAILED: "❌", StepStatus.SKIPPED: "⏭️",
}
RUN_ICON = {
    RunStatus.SUCCEEDED: "✅", RunStatus.FAILED: "❌", RunStatus.CANCELLED: "🛑",
    RunStatus.REFUSED: "🚫", RunStatus.RESTORE_RECOMMENDED: "🚨", RunStatus.INTERRUPTED: "⚠️",
    RunStatus.RUNNING: "⏳", RunStatus.PREFLIGHT: "⏳",
}
TIER_TEXT = {"immediate": "Immediate", "extended": "Extended", "comprehensive": "Comprehensive"}


def esc(text: str) -> str:
    """Escape user text for mrkdwn, so nobody can @-mention a channel or forge a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def mention(user: str) -> str:
    """Slack user ids render as mentions; CLI actors stay plain text."""
    return f"<@{user}>" if user[:1] in "UW" and user.isalnum() else esc(user)


def _text(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": clip(text, SECTION_LIMIT)}


def section(text: str, *, block_id: str | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "section", "text": _text(text or " ")}
    if block_id:
        block["block_id"] = block_id
    return block


def header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": clip(text, 150)}}


def context(*parts: str) -> dict[str, Any]:
    return {"type": "context", "elements": [_text(p) for p in parts[:10]]}


def button(text: str, action: Action, value: str, *, style: str | None = None,
           confirm: dict[str, Any] | None = None) -> dict[str, Any]:
    b: dict[str, Any] = {"type": "button", "action_id": action.value,
                         "text": {"type": "plain_text", "text": clip(text, 75)},
                         "value": value}
    if style:
        b["style"] = style
    if confirm:
        b["confirm"] = confirm
    return b


def confirm_dialog(title: str, text: str, yes: str, no: str = "Keep it") -> dict[str, Any]:
    return {"title": {"type": "plain_text", "text": clip(title, 100)},
            "text": _text(clip(text, 300)),
            "confirm": {"type": "plain_text", "text": clip(yes, 30)},
            "deny": {"type": "plain_text", "text": clip(no, 30)}, "style": "danger"}


def actions(block_id: Block, *elements: dict[str, Any]) -> dict[str, Any]:
    return {"type": "actions", "block_id": block_id.value, "elements": list(elements)}



def help_message(problem: str = "") -> Blocks:
    blocks = [section(f"⚠️ {esc(problem)}")] if problem else []
    return [*blocks, section(HELP)]


def refusal(reason: str) -> Blocks:
    return [section(f"🚫 {esc(reason)}")]


def sections_text(blocks: Blocks) -> str:
    """The text of a message's sections: the notification text Slack shows for its blocks."""
    return " ".join(b["text"]["text"] for b in blocks if b["type"] == "section")[:3000]
