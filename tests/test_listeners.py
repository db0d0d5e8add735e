"""The listener table: every button and form rollbot builds has exactly one row, with its ack."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

from handlers.app import autorollback_rows
from handlers.ids import (
    Action,
    AssessAction,
    AssessView,
    Block,
    Field,
    HomeAction,
    HomeView,
    Shortcut,
    View,
    numbered,
)
from handlers.listeners import Kind, Request, Row, front_rows


def rows() -> list[Row]:
    parts = SimpleNamespace(commands=None, cards=None, run=None, after_run=None, home=None)
    return [*front_rows(parts), *autorollback_rows(SimpleNamespace())]  # type: ignore[arg-type]


def matched(kind: Kind, sent: str) -> list[Row]:
    """The rows Bolt would run for a request of this kind with this id."""
    return [r for r in rows() if r.kind is kind and (
        re.fullmatch(r.matcher, sent) if isinstance(r.matcher, re.Pattern) else r.matcher == sent)]


def test_every_button_has_exactly_one_row() -> None:
    sent = [a.value for a in Action if a is not Action.CHECKLIST_TOGGLE]
    sent += ["rollbot.checklist.toggle.post_mortem", AssessAction.OPEN_CARD.value]
    sent += [a.value for a in HomeAction]
    # the home tab's buttons shown once per deploy or per version, numbered to stay unique
    sent += [numbered(Action.AUTO_CANCEL, 12), numbered(Action.AUTO_ROLL_BACK_NOW, 12),
             numbered(HomeAction.UNQUARANTINE, 0, 3)]
    for action_id in sent:
        assert len(matched(Kind.ACTION, action_id)) == 1, action_id


def test_every_form_has_one_row_that_checks_it_before_the_ack() -> None:
    # the tab is published, not submitted; the refusal has no submit button
    forms = [v for v in HomeView if v not in (HomeView.TAB, HomeView.REFUSED)]
    for callback_id in [*(v.value for v in View), AssessView.ASSESS.value, *forms]:
        found = matched(Kind.VIEW, callback_id)
        assert len(found) == 1, callback_id
        assert found[0].check is not None, f"{callback_id}: modal errors go in the ack"


def test_the_slash_command_answers_with_a_quick_word_only_when_it_goes_to_production() -> None:
    (command,) = matched(Kind.COMMAND, "/rollback")
    assert command.ack_text is not None

    async def nowhere(_blocks: Any, _text: str) -> None:
        raise AssertionError("the ack text is pure")

    def ack_text(text: str) -> str | None:
        assert command.ack_text is not None
        return command.ack_text(Request(body={"text": text}, reply=nowhere))

    assert ack_text("v1.2.2 users see 500s") == "⏳ Checking production…"
    assert ack_text("help") is None
    assert ack_text("v1.2.2; rm -rf /") is None  # the help text with what was wrong follows
    assert matched(Kind.EVENT, "app_mention")
    assert matched(Kind.EVENT, "app_home_opened")


def test_a_request_reads_what_a_person_typed_and_an_emptied_field_is_empty() -> None:
    async def nowhere(_blocks: Any, _text: str) -> None:
        return None

    body = {"user": {"id": "U0ALICE"}, "view": {"private_metadata": '{"run": 3}', "state": {
        "values": {"rollbot.modal.impact": {"impact": {"value": "checkout down"}},
                   "rollbot.modal.root_cause": {"root_cause": {"value": None}}}}}}
    r = Request(body=body, reply=nowhere)
    assert r.user == "U0ALICE" and r.metadata == '{"run": 3}'
    assert r.typed(Block.REPORT_IMPACT, Field.IMPACT) == "checkout down"
    assert r.typed(Block.REPORT_ROOT_CAUSE, Field.ROOT_CAUSE) == ""
    assert r.typed(Block.ETA, Field.ETA) == ""


def test_the_message_shortcut_has_one_row_acknowledged_at_once() -> None:
    for callback_id in (s.value for s in Shortcut):
        (row,) = matched(Kind.SHORTCUT, callback_id)
        assert row.check is None and row.ack_text is None  # a plain ack, the work after it
