"""The "roll back or fix forward?" modal and its verdict message: pure Block Kit builders.

The decision itself is ``bot.decision.assess``; this module only asks the spec's questions,
parses the answers and renders the verdict, with a button that opens the recommended pre-flight
card (nothing runs from here).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bot.decision import (
    DECISION_TABLE,
    Action,
    Assessment,
    Scenario,
    Urgency,
    Verdict,
)
from bot.errors import InvalidInput
from bot.model import ProcedureName
from bot.procedures.catalog import TITLES
from handlers.blocks import Blocks, clip, context, esc, header, section
from handlers.ids import AssessAction, AssessBlock, AssessField, AssessView
from handlers.metadata import AssessCardRef

# These ids move to handlers/ids.py; until then they live here, never as bare strings.


_YES, _NO = "yes", "no"
_ENVIRONMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_MINUTES = re.compile(r"(\d{1,5})\s*(?:m|min|mins|minutes?)?", re.IGNORECASE)
_QUESTIONS = {  # block -> (field, question), for the yes/no inputs
    AssessBlock.USERS_AFFECTED: (AssessField.USERS_AFFECTED, "Are users affected?"),
    AssessBlock.ROOT_CAUSE_KNOWN: (AssessField.ROOT_CAUSE_KNOWN, "Is the root cause known?"),
    AssessBlock.DATA_LOSS: (AssessField.DATA_LOSS, "Would rolling back lose data?"),
    AssessBlock.PREVIOUS_STABLE: (AssessField.PREVIOUS_STABLE,
                                  "Is the previous version known stable?"),
}
_HINTS = {
    AssessBlock.DATA_LOSS: "Yes if the new version wrote data the old one cannot keep, or its "
                           "migrations would have to be undone or the database restored.",
}
_ACTION_TEXT = {
    Action.ROLLBACK_NOW: "Roll back now",
    Action.ROLLBACK_AND_RESTORE: "Roll back and restore the database from backup",
    Action.ROLLBACK_IF_NOT_FIXED_IN_15: "Fix it, and roll back if not fixed within 15 minutes",
    Action.ROLLBACK_IF_NOT_FIXED_IN_30: "Fix it, and roll back if not fixed within 30 minutes",
    Action.FIX_FORWARD: "Fix forward",
    Action.ROLLBACK_OR_REDEPLOY: "Roll back or redeploy",
}
_URGENCY_ICON = {Urgency.CRITICAL: "🚨", Urgency.HIGH: "⚠️", Urgency.LOW: "ℹ️"}


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text}


def _option(text: str, value: str) -> dict[str, Any]:
    return {"text": _plain(text), "value": value}


def _yes_no(block: AssessBlock, *, initial: bool | None = None) -> dict[str, Any]:
    field, question = _QUESTIONS[block]
    element: dict[str, Any] = {"type": "radio_buttons", "action_id": field.value,
                               "options": [_option("Yes", _YES), _option("No", _NO)]}
    if initial is not None:
        element["initial_option"] = _option("Yes", _YES) if initial else _option("No", _NO)
    block_dict: dict[str, Any] = {"type": "input", "block_id": block.value,
                                  "label": _plain(question), "element": element}
    if block in _HINTS:
        block_dict["hint"] = _plain(_HINTS[block])
    return block_dict


def assess_modal(*, environment: str) -> dict[str, Any]:
    """The spec's questions, as a modal; submitting it gives ``parse_assess_submission``."""
    scenarios = [_option(clip(row.scenario_text, 75), scenario.value)
                 for scenario, row in DECISION_TABLE.items()]
    return {
        "type": "modal", "callback_id": AssessView.ASSESS.value,
        "title": _plain("Roll back or fix?"),
        "submit": _plain("Assess"),
        "close": _plain("Cancel"),
        "blocks": [
            section("Answer what you know now. rollbot applies the spec's *Rollback Decision "
                    "Matrix* and recommends; nothing runs from this form."),
            {"type": "input", "block_id": AssessBlock.ENVIRONMENT.value,
             "label": _plain("Environment"),
             "element": {"type": "plain_text_input", "action_id": AssessField.ENVIRONMENT.value,
                         "initial_value": clip(environment, 64), "max_length": 64}},
            {"type": "input", "block_id": AssessBlock.SCENARIO.value,
             "label": _plain("What is happening?"),
             "element": {"type": "static_select", "action_id": AssessField.SCENARIO.value,
                         "placeholder": _plain("Pick the closest scenario"),
                         "options": scenarios}},
            _yes_no(AssessBlock.USERS_AFFECTED),
            _yes_no(AssessBlock.ROOT_CAUSE_KNOWN),
            {"type": "input", "block_id": AssessBlock.MINUTES_TO_FIX.value, "optional": True,
             "label": _plain("Minutes until a fix is out, if anyone knows"),
             "hint": _plain("A whole number of minutes. Leave it empty if nobody knows yet."),
             "element": {"type": "plain_text_input",
                         "action_id": AssessField.MINUTES_TO_FIX.value, "max_length": 12,
                         "placeholder": _plain("e.g. 20")}},
            _yes_no(AssessBlock.DATA_LOSS),
            _yes_no(AssessBlock.PREVIOUS_STABLE, initial=True),
        ],
    }


def _element(values: Mapping[str, Any], block: AssessBlock, field: AssessField) -> Any:
    by_action = values.get(block.value)
    return by_action.get(field.value) if isinstance(by_action, Mapping) else None


def _selected(values: Mapping[str, Any], block: AssessBlock, field: AssessField) -> str | None:
    element = _element(values, block, field)
    option = element.get("selected_option") if isinstance(element, Mapping) else None
    value = option.get("value") if isinstance(option, Mapping) else None
    return value if isinstance(value, str) else None


def _typed(values: Mapping[str, Any], block: AssessBlock, field: AssessField) -> str:
    element = _element(values, block, field)
    value = element.get("value") if isinstance(element, Mapping) else None
    return value.strip() if isinstance(value, str) else ""


def _answer(values: Mapping[str, Any], block: AssessBlock, *, default: bool | None = None) -> bool:
    field, question = _QUESTIONS[block]
    value = _selected(values, block, field)
    if value is None and default is not None:
        return default
    if value not in (_YES, _NO):
        raise InvalidInput(f"Answer “{question}” with yes or no.")
    return value == _YES


def parse_minutes(raw: str) -> int | None:
    """Minutes to a fix as typed ("20", "20 min"); empty means nobody knows yet."""
    text = raw.strip()
    if not text:
        return None
    if text.startswith("-"):
        raise InvalidInput("The minutes to a fix cannot be negative. Type a whole number like "
                           "20, or leave it empty if nobody knows yet.")
    match = _MINUTES.fullmatch(text)
    if match is None:
        raise InvalidInput(f"“{clip(text, 20)}” is not a number of minutes. Type a whole "
                           "number like 20, or leave it empty if nobody knows yet.")
    return int(match.group(1))


def parse_assess_submission(state_values: Mapping[str, Any]) -> Assessment:
    """The answers in a submitted assess modal (Slack's ``view.state.values``)."""
    environment = _typed(state_values, AssessBlock.ENVIRONMENT, AssessField.ENVIRONMENT)
    if not _ENVIRONMENT.fullmatch(environment):
        raise InvalidInput("Name the environment (letters, digits, '.', '_' or '-', at most "
                           "64 characters), e.g. production.")
    raw_scenario = _selected(state_values, AssessBlock.SCENARIO, AssessField.SCENARIO)
    try:
        scenario = Scenario(raw_scenario or "")
    except ValueError:
        raise InvalidInput("Pick what is happening from the list; choose “Something else” "
                           "if nothing fits.") from None
    return Assessment(
        scenario=scenario,
        users_affected=_answer(state_values, AssessBlock.USERS_AFFECTED),
        root_cause_known=_answer(state_values, AssessBlock.ROOT_CAUSE_KNOWN),
        minutes_to_fix=parse_minutes(
            _typed(state_values, AssessBlock.MINUTES_TO_FIX, AssessField.MINUTES_TO_FIX)),
        data_loss_if_rolled_back=_answer(state_values, AssessBlock.DATA_LOSS),
        previous_version_known_stable=_answer(state_values, AssessBlock.PREVIOUS_STABLE,
                                              default=True),
        environment=environment,
    )


def _yn(value: bool) -> str:
    return "yes" if value else "no"


def _answers(a: Assessment, version_hint: str | None) -> dict[str, Any]:
    fields = [
        f"*Environment*\n{esc(a.environment)}",
        f"*Scenario*\n{esc(DECISION_TABLE[a.scenario].scenario_text)}",
        f"*Users affected*\n{_yn(a.users_affected)}",
        f"*Root cause*\n{'known' if a.root_cause_known else 'unknown'}",
        "*Time to a fix*\n" + ("unknown" if a.minutes_to_fix is None
                               else f"{a.minutes_to_fix} min"),
        f"*Rollback loses data*\n{_yn(a.data_loss_if_rolled_back)}",
        "*Previous version*\n" + ("known stable" if a.previous_version_known_stable
                                  else "*not* known stable"),
    ]
    if version_hint:
        fields.append(f"*Rollback target*\n`{esc(clip(version_hint, 64))}`")
    return {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]}


def _reason_sections(reasons: tuple[str, ...]) -> Blocks:
    """One bullet per reason, packed into as few sections as the 3,000-character limit allows."""
    lines = [clip(f"{'⚠️' if r.upper().startswith('WARNING') else '•'} {esc(r)}", 2900)
             for r in reasons]
    chunks: list[str] = ["*Why*"]
    for line in lines:
        if len(chunks[-1]) + 1 + len(line) > 3000:
            chunks.append(line)
        else:
            chunks[-1] += "\n" + line
    return [section(chunk) for chunk in chunks]


def verdict_message(v: Verdict, a: Assessment, *, version_hint: str | None) -> Blocks:
    """The verdict, its urgency and the spec's reasons; a button opens the recommended card."""
    blocks: Blocks = [
        header(f"{_URGENCY_ICON[v.urgency]} {_ACTION_TEXT[v.action]} ({v.urgency.name})"),
        _answers(a, version_hint),
        *_reason_sections(v.reasons),
    ]
    if v.recommended_procedure is not None:
        procedure = v.recommended_procedure
        title = TITLES[procedure].reference
        target = f"`{esc(clip(version_hint, 64))}`" if version_hint else "the previous version"
        blocks.append(section(f"*Recommended:* {esc(title)}, to {target} in "
                              f"*{esc(a.environment)}*."))
        button: dict[str, Any] = {
            "type": "button", "action_id": AssessAction.OPEN_CARD.value,
            "text": _plain(f"Open pre-flight card: {procedure.value}"),
            "value": AssessCardRef(procedure=procedure, environment=a.environment).dump(),
        }
        if procedure is ProcedureName.RESTORE:
            button["style"] = "danger"
        blocks.append({"type": "actions", "block_id": AssessBlock.ACTIONS.value,
                       "elements": [button]})
    blocks.append(context("The decision is the incident commander's. The card runs pre-flight "
                          "checks and asks to confirm; nothing has run yet."))
    return blocks
