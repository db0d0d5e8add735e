"""What a person sees and does in rollbot's Home tab, for the end-to-end tests."""

from __future__ import annotations

import re
from typing import Any

from handlers.ids import HomeBlock, HomeField
from slack_emulator import CallRecord, View
from tests.slack_world import SlackWorld


def tab_text(view: View) -> str:
    """Every text the tab shows, buttons included."""
    parts: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") in ("mrkdwn", "plain_text"):
                parts.append(str(node.get("text", "")))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(view.payload.get("blocks", []))
    return "\n".join(parts)


def tab_buttons(view: View) -> list[str]:
    """The action_ids of the tab's buttons, without the numbers that keep them unique."""
    found = []
    for block in view.payload.get("blocks", []):
        elements = block.get("elements", []) if block["type"] == "actions" else []
        elements = [*elements, *([block["accessory"]] if "accessory" in block else [])]
        found += [re.sub(r"(\.[0-9]+)+$", "", str(e["action_id"])) for e in elements
                  if e.get("type") == "button"]
    return found


def tab_button(view: View, label: str) -> str:
    """The full action_id of the tab's button with this label."""
    for block in view.payload.get("blocks", []):
        elements = block.get("elements", []) if block["type"] == "actions" else []
        for e in [*elements, *([block["accessory"]] if "accessory" in block else [])]:
            if e.get("type") == "button" and e["text"]["text"] == label:
                return str(e["action_id"])
    raise LookupError(f"no button {label!r} in the tab")


def publishes(world: SlackWorld, user: str) -> list[CallRecord]:
    return [c for c in world.emu.calls_to("views.publish")
            if c.params.get("user_id") == user and c.ok]


async def open_tab(world: SlackWorld, user: str) -> View:
    """The person opens rollbot's Home tab; rollbot publishes it for them."""
    before = len(publishes(world, user))
    opened = await world.sender.app_home_opened(user)
    assert opened.acked_in_time, opened
    await world.emu.wait_for(lambda: len(publishes(world, user)) > before, timeout=15)
    view = world.emu.home_view(user)
    assert view is not None
    return view


async def wait_tab(world: SlackWorld, user: str, *words: str, timeout: float = 20) -> View:
    """The person's tab, once it shows all of ``words`` (republished without reopening)."""
    def shown() -> View | None:
        view = world.emu.home_view(user)
        return view if view is not None and all(w in tab_text(view) for w in words) else None
    try:
        return await world.emu.wait_for(shown, timeout=timeout)
    except TimeoutError:
        view = world.emu.home_view(user)
        refused = [c.response for c in world.emu.calls_to("views.publish") if not c.ok]
        raise AssertionError(f"the tab never showed {words}; it shows:\n"
                             f"{tab_text(view) if view else '(nothing)'}\n"
                             f"refused publishes: {refused}") from None


async def wait_modal(world: SlackWorld, user: str, callback_id: str) -> View:
    return await world.emu.wait_for(lambda: next(
        (v for v in world.emu.views(user, open_only=True)
         if v.payload.get("callback_id") == callback_id), None), timeout=10)


def plan_values(*, version: str, reason: str, environment: str = "production",
                procedure: str = "simple") -> dict[str, Any]:
    """What a person fills in the Plan a rollback modal."""
    def picked(value: str) -> dict[str, Any]:
        return {"type": "static_select", "selected_option": {"value": value}}
    return {
        HomeBlock.PLAN_ENVIRONMENT.value: {HomeField.ENVIRONMENT.value: picked(environment)},
        HomeBlock.PLAN_VERSION.value: {HomeField.VERSION.value: version},
        HomeBlock.PLAN_PROCEDURE.value: {HomeField.PROCEDURE.value: picked(procedure)},
        HomeBlock.PLAN_REASON.value: {HomeField.REASON.value: reason},
    }
