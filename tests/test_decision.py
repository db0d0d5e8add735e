"""The incident commander answers the spec's questions; rollbot says roll back or fix forward, why.

Source: production-rollback-procedures.md, "Rollback Decision Matrix" (the table and the
"Rollback vs. Fix Forward" lists). The precedence is documented in ``bot.decision``.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from bot.decision import (
    DECISION_TABLE,
    Action,
    Assessment,
    Scenario,
    Urgency,
    Verdict,
    assess,
)
from bot.errors import InvalidInput
from bot.model import ProcedureName
from handlers.assess import assess_modal, parse_assess_submission, verdict_message
from handlers.ids import AssessAction, AssessBlock, AssessField, AssessView
from slack_emulator.limits import block_kit_problems, modal_view_problems


def answers(scenario: Scenario, **overrides: Any) -> Assessment:
    """The default answers: users affected, root cause known, fix time unknown, no data loss."""
    values: dict[str, Any] = {
        "scenario": scenario, "users_affected": True, "root_cause_known": True,
        "minutes_to_fix": None, "data_loss_if_rolled_back": False,
        "previous_version_known_stable": True, "environment": "production",
    }
    values.update(overrides)
    return Assessment(**values)


def said(v: Verdict, text: str) -> bool:
    return any(text in reason for reason in v.reasons)


# --- the table: one case per row, with the default answers -----------------------------------

TABLE_ROWS = [
    (Scenario.CRITICAL_BUG, "Critical bug affecting users", Action.ROLLBACK_NOW,
     Urgency.CRITICAL, ProcedureName.SIMPLE),
    (Scenario.SERVICE_DOWN, "Service completely down", Action.ROLLBACK_NOW,
     Urgency.CRITICAL, ProcedureName.EMERGENCY),
    (Scenario.DATA_CORRUPTION, "Data corruption detected", Action.ROLLBACK_AND_RESTORE,
     Urgency.CRITICAL, ProcedureName.RESTORE),
    (Scenario.PERFORMANCE_DEGRADATION, "Performance degradation > 50%",
     Action.ROLLBACK_IF_NOT_FIXED_IN_15, Urgency.HIGH, ProcedureName.SIMPLE),
    (Scenario.PARTIAL_OUTAGE, "Partial service outage", Action.ROLLBACK_IF_NOT_FIXED_IN_30,
     Urgency.HIGH, ProcedureName.SIMPLE),
    (Scenario.MINOR_BUG, "Minor bug, workaround available", Action.FIX_FORWARD,
     Urgency.LOW, None),
    (Scenario.STAGING_ISSUE, "Staging environment issue", Action.ROLLBACK_OR_REDEPLOY,
     Urgency.LOW, ProcedureName.SIMPLE),
]


@pytest.mark.parametrize(("scenario", "spec_text", "action", "urgency", "procedure"),
                         TABLE_ROWS, ids=[row[0].value for row in TABLE_ROWS])
def test_each_row_of_the_table_gives_the_spec_action_and_urgency(
        scenario: Scenario, spec_text: str, action: Action, urgency: Urgency,
        procedure: ProcedureName | None) -> None:
    v = assess(answers(scenario))
    assert (v.action, v.urgency, v.recommended_procedure) == (action, urgency, procedure)
    assert v.reasons[0].startswith(f"The spec's table: “{spec_text}”")
    assert f"urgency {urgency.name}" in v.reasons[0]


def test_the_table_covers_every_scenario() -> None:
    assert set(DECISION_TABLE) == set(Scenario)


@pytest.mark.parametrize(("users_affected", "urgency"),
                         [(True, Urgency.HIGH), (False, Urgency.LOW)])
def test_other_is_not_in_the_table_so_the_lists_decide_with_a_30_minute_limit(
        users_affected: bool, urgency: Urgency) -> None:
    v = assess(answers(Scenario.OTHER, users_affected=users_affected))
    assert (v.action, v.urgency) == (Action.ROLLBACK_IF_NOT_FIXED_IN_30, urgency)
    assert v.recommended_procedure is ProcedureName.SIMPLE
    assert "not in the spec's table" in v.reasons[0]
    assert said(v, "start a 30-minute clock")


def test_a_high_row_with_no_fix_estimate_starts_the_clock() -> None:
    v = assess(answers(Scenario.PERFORMANCE_DEGRADATION))
    assert said(v, "Nobody knows yet how long a fix will take: start a 15-minute clock now")


# --- each rule of "Rollback vs. Fix Forward" --------------------------------------------------

@pytest.mark.parametrize("users_affected", [True, False])
def test_rollback_when_issue_is_critical_and_affects_users(users_affected: bool) -> None:
    v = assess(answers(Scenario.CRITICAL_BUG, users_affected=users_affected))
    assert v.action is Action.ROLLBACK_NOW
    assert said(v, "Roll back now: the issue is critical")
    assert said(v, "“Issue is critical and affects users”")


def test_rollback_when_root_cause_unknown() -> None:
    v = assess(answers(Scenario.PARTIAL_OUTAGE, root_cause_known=False))
    assert (v.action, v.urgency) == (Action.ROLLBACK_NOW, Urgency.HIGH)
    assert v.recommended_procedure is ProcedureName.SIMPLE
    assert said(v, "Roll back now: nobody knows the root cause yet")
    assert said(v, "“Root cause unknown”")


@pytest.mark.parametrize(("minutes", "action"), [
    (31, Action.ROLLBACK_NOW), (30, Action.ROLLBACK_IF_NOT_FIXED_IN_30)])
def test_rollback_when_fix_would_take_more_than_30_minutes(minutes: int, action: Action) -> None:
    v = assess(answers(Scenario.PARTIAL_OUTAGE, minutes_to_fix=minutes))
    assert v.action is action
    assert said(v, "“Fix would take > 30 minutes”") is (minutes > 30)


def test_a_fix_inside_the_limit_is_tried_before_rolling_back() -> None:
    v = assess(answers(Scenario.PARTIAL_OUTAGE, minutes_to_fix=20))
    assert v.action is Action.ROLLBACK_IF_NOT_FIXED_IN_30
    assert said(v, "expected to take 20 minutes, within the 30-minute limit")


@pytest.mark.parametrize(("minutes", "action"), [
    (16, Action.ROLLBACK_NOW), (15, Action.ROLLBACK_IF_NOT_FIXED_IN_15)])
def test_performance_rolls_back_when_not_fixable_in_15_minutes(
        minutes: int, action: Action) -> None:
    v = assess(answers(Scenario.PERFORMANCE_DEGRADATION, minutes_to_fix=minutes))
    assert v.action is action
    assert said(v, "past this scenario's 15-minute limit") is (minutes > 15)


def test_previous_version_known_stable_supports_a_rollback() -> None:
    v = assess(answers(Scenario.SERVICE_DOWN))
    assert said(v, "“Previous version is known stable”")
    assert not said(v, "not known to be stable")


@pytest.mark.parametrize("scenario", list(Scenario))
def test_previous_version_not_known_stable_warns_but_does_not_change_the_action(
        scenario: Scenario) -> None:
    stable = assess(answers(scenario))
    unsure = assess(answers(scenario, previous_version_known_stable=False))
    assert (unsure.action, unsure.urgency) == (stable.action, stable.urgency)
    assert said(unsure, "Warning: the previous version is not known to be stable")
    assert not said(unsure, "“Previous version is known stable”")


def test_fix_forward_when_issue_is_minor() -> None:
    v = assess(answers(Scenario.MINOR_BUG))
    assert (v.action, v.urgency, v.recommended_procedure) == (
        Action.FIX_FORWARD, Urgency.LOW, None)
    assert said(v, "Fix forward: the issue is minor")
    assert said(v, "“Issue is minor”")


@pytest.mark.parametrize(("scenario", "limit"), [
    (Scenario.PERFORMANCE_DEGRADATION, 15), (Scenario.PARTIAL_OUTAGE, 30), (Scenario.OTHER, 30)])
def test_fix_forward_when_fix_is_quick_and_root_cause_identified(
        scenario: Scenario, limit: int) -> None:
    v = assess(answers(scenario, minutes_to_fix=14))
    assert v.action is Action.FIX_FORWARD
    assert v.recommended_procedure is None
    assert said(v, "“Fix is quick (< 15 minutes)” and “Root cause identified”")
    assert said(v, f"Keep the {limit}-minute limit: if it is not fixed by then, roll back.")


def test_a_15_minute_fix_is_not_quick() -> None:
    v = assess(answers(Scenario.PARTIAL_OUTAGE, minutes_to_fix=15))
    assert v.action is Action.ROLLBACK_IF_NOT_FIXED_IN_30


@pytest.mark.parametrize("scenario", [
    Scenario.PERFORMANCE_DEGRADATION, Scenario.PARTIAL_OUTAGE, Scenario.STAGING_ISSUE,
    Scenario.OTHER])
def test_fix_forward_when_rollback_would_cause_data_loss(scenario: Scenario) -> None:
    v = assess(answers(scenario, data_loss_if_rolled_back=True))
    assert v.action is Action.FIX_FORWARD
    assert v.recommended_procedure is None
    assert said(v, "Fix forward: a rollback would lose data")
    assert said(v, "“Rollback would cause data loss”")


@pytest.mark.parametrize(("scenario", "action", "procedure"), [
    (Scenario.CRITICAL_BUG, Action.ROLLBACK_NOW, ProcedureName.MIGRATIONS),
    (Scenario.SERVICE_DOWN, Action.ROLLBACK_NOW, ProcedureName.EMERGENCY),
    (Scenario.DATA_CORRUPTION, Action.ROLLBACK_AND_RESTORE, ProcedureName.RESTORE),
])
def test_a_critical_rollback_that_loses_data_still_happens_and_says_so_loudly(
        scenario: Scenario, action: Action, procedure: ProcedureName) -> None:
    v = assess(answers(scenario, data_loss_if_rolled_back=True))
    assert (v.action, v.urgency, v.recommended_procedure) == (
        action, Urgency.CRITICAL, procedure)
    loud = [r for r in v.reasons if r.startswith("WARNING: THIS ROLLBACK LOSES DATA.")]
    assert len(loud) == 1
    assert "full restore from backup (Procedure 3) loses every write since" in loud[0]
    assert "migration rollback (Procedure 2) keeps the rows" in loud[0]


def test_a_code_only_rollback_that_touches_data_becomes_a_migration_rollback() -> None:
    v = assess(answers(Scenario.CRITICAL_BUG, data_loss_if_rolled_back=True))
    assert said(v, "Procedure 1 is for code-only changes")
    assert v.reasons[-1].startswith("Recommended procedure: Procedure 2")


# --- precedence ---------------------------------------------------------------------------------

def test_critical_outranks_every_fix_forward_rule() -> None:
    v = assess(answers(Scenario.SERVICE_DOWN, minutes_to_fix=5,
                       data_loss_if_rolled_back=True))
    assert v.action is Action.ROLLBACK_NOW
    assert said(v, "and the root cause is identified, which points to fix forward")
    assert said(v, "but the table's CRITICAL rating takes precedence")


def test_data_loss_outranks_unknown_root_cause_and_a_slow_fix() -> None:
    v = assess(answers(Scenario.PARTIAL_OUTAGE, root_cause_known=False, minutes_to_fix=45,
                       data_loss_if_rolled_back=True))
    assert v.action is Action.FIX_FORWARD
    outweighed = [r for r in v.reasons if "but the data-loss rule takes precedence" in r]
    assert len(outweighed) == 2  # root cause unknown, fix > 30 minutes: neither is hidden
    assert said(v, "If the issue turns critical before the fix is out, assess again")


def test_minor_outranks_unknown_root_cause_and_a_slow_fix() -> None:
    v = assess(answers(Scenario.MINOR_BUG, root_cause_known=False, minutes_to_fix=120))
    assert v.action is Action.FIX_FORWARD
    assert said(v, "but the table's minor-bug row takes precedence")


def test_unknown_root_cause_outranks_a_quick_fix() -> None:
    v = assess(answers(Scenario.PERFORMANCE_DEGRADATION, root_cause_known=False,
                       minutes_to_fix=5))
    assert v.action is Action.ROLLBACK_NOW
    assert said(v, "A fix is expected in 5 minutes, which points to fix forward")
    assert said(v, "but the unknown root cause takes precedence")


def test_rules_that_agree_add_their_reason() -> None:
    v = assess(answers(Scenario.PARTIAL_OUTAGE, root_cause_known=False, minutes_to_fix=45))
    assert v.action is Action.ROLLBACK_NOW
    assert said(v, "Also, the fix is expected to take 45 minutes")


@pytest.mark.parametrize(("overrides", "action"), [
    ({}, Action.ROLLBACK_OR_REDEPLOY),
    ({"minutes_to_fix": 5}, Action.FIX_FORWARD),
    ({"root_cause_known": False}, Action.ROLLBACK_NOW),
])
def test_staging_stays_low_while_the_lists_pick_rollback_or_redeploy(
        overrides: dict[str, Any], action: Action) -> None:
    v = assess(answers(Scenario.STAGING_ISSUE, environment="staging", **overrides))
    assert (v.action, v.urgency) == (action, Urgency.LOW)


ALL_ANSWERS = [
    answers(scenario, users_affected=users, root_cause_known=cause, minutes_to_fix=minutes,
            data_loss_if_rolled_back=loss, previous_version_known_stable=stable)
    for scenario, users, cause, minutes, loss, stable in itertools.product(
        Scenario, (True, False), (True, False), (None, 0, 14, 15, 16, 30, 31, 240),
        (True, False), (True, False))
]


def test_every_verdict_is_consistent_and_explained_in_sentences() -> None:
    for a in ALL_ANSWERS:
        v = assess(a)
        table_urgency = DECISION_TABLE[a.scenario].urgency
        assert table_urgency is None or v.urgency is table_urgency, a
        assert (v.action is Action.FIX_FORWARD) is (v.recommended_procedure is None), a
        assert len(v.reasons) >= 2, a
        for reason in v.reasons:
            assert reason[:1].isupper() and reason.endswith("."), (a, reason)


def test_negative_minutes_are_refused() -> None:
    with pytest.raises(InvalidInput, match="cannot be negative"):
        answers(Scenario.OTHER, minutes_to_fix=-1)


# --- Slack: the modal, the submission, the verdict message -------------------------------------

def test_the_modal_is_within_block_kit_limits() -> None:
    view = assess_modal(environment="production")
    assert modal_view_problems(view) == []
    assert view["callback_id"] == AssessView.ASSESS == "rollbot.view.assess"
    assert len(view["title"]["text"]) <= 24
    assert view["submit"]["text"] == "Assess"
    inputs = {b["block_id"]: b for b in view["blocks"] if b["type"] == "input"}
    scenario = inputs[AssessBlock.SCENARIO]["element"]
    assert scenario["type"] == "static_select"
    assert [o["value"] for o in scenario["options"]] == [s.value for s in Scenario]
    minutes = inputs[AssessBlock.MINUTES_TO_FIX]
    assert minutes["optional"] is True
    assert minutes["element"]["type"] == "plain_text_input"
    assert inputs[AssessBlock.ENVIRONMENT]["element"]["initial_value"] == "production"


def state_values(*, scenario: str = "partial_outage", users: str = "yes", cause: str = "yes",
                 minutes: str | None = "20", loss: str = "no", stable: str | None = "yes",
                 environment: str = "production",
                 choice: str = "radio_buttons") -> dict[str, Any]:
    """A submission as Slack sends it in ``view.state.values``."""
    def picked(value: str, kind: str = choice) -> dict[str, Any]:
        return {"type": kind, "selected_option": {"text": {"type": "plain_text", "text": value},
                                                  "value": value}}
    values: dict[str, Any] = {
        AssessBlock.ENVIRONMENT: {AssessField.ENVIRONMENT: {
            "type": "plain_text_input", "value": environment}},
        AssessBlock.SCENARIO: {AssessField.SCENARIO: picked(scenario, "static_select")},
        AssessBlock.USERS_AFFECTED: {AssessField.USERS_AFFECTED: picked(users)},
        AssessBlock.ROOT_CAUSE_KNOWN: {AssessField.ROOT_CAUSE_KNOWN: picked(cause)},
        AssessBlock.MINUTES_TO_FIX: {AssessField.MINUTES_TO_FIX: {
            "type": "plain_text_input", "value": minutes}},
        AssessBlock.DATA_LOSS: {AssessField.DATA_LOSS: picked(loss)},
    }
    if stable is not None:
        values[AssessBlock.PREVIOUS_STABLE] = {AssessField.PREVIOUS_STABLE: picked(stable)}
    return json.loads(json.dumps(values))  # plain str keys, as Slack's JSON gives them


@pytest.mark.parametrize("choice", ["radio_buttons", "static_select"])
def test_a_submission_becomes_an_assessment(choice: str) -> None:
    a = parse_assess_submission(state_values(choice=choice, loss="yes", stable="no"))
    assert a == Assessment(scenario=Scenario.PARTIAL_OUTAGE, users_affected=True,
                           root_cause_known=True, minutes_to_fix=20,
                           data_loss_if_rolled_back=True, previous_version_known_stable=False,
                           environment="production")


@pytest.mark.parametrize(("typed", "minutes"), [
    (None, None), ("", None), ("   ", None), ("0", 0), (" 45 ", 45), ("20 min", 20),
    ("20m", 20), ("90 minutes", 90)])
def test_minutes_to_a_fix_are_optional(typed: str | None, minutes: int | None) -> None:
    assert parse_assess_submission(state_values(minutes=typed)).minutes_to_fix == minutes


@pytest.mark.parametrize(("typed", "message"), [
    ("soon", "“soon” is not a number of minutes. Type a whole number like 20"),
    ("1.5", "is not a number of minutes"),
    ("-5", "cannot be negative"),
    ("half an hour", "is not a number of minutes"),
])
def test_bad_minutes_are_refused_with_a_sentence(typed: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_assess_submission(state_values(minutes=typed))


def test_a_missing_answer_is_refused_and_previous_stable_defaults_to_yes() -> None:
    values = state_values(stable=None)
    assert parse_assess_submission(values).previous_version_known_stable is True
    del values[AssessBlock.ROOT_CAUSE_KNOWN]
    with pytest.raises(InvalidInput, match="Answer “Is the root cause known\\?” with yes or no"):
        parse_assess_submission(values)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"scenario": "meteor_strike"}, "Pick what is happening from the list"),
    ({"environment": ""}, "Name the environment"),
    ({"environment": "prod; rm -rf /"}, "Name the environment"),
])
def test_a_forged_or_empty_answer_is_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_assess_submission(state_values(**overrides))


def test_the_modal_and_the_parser_agree_on_ids() -> None:
    """Someone submits the modal picking the first option everywhere, typing nothing else."""
    view = assess_modal(environment="staging")
    values: dict[str, Any] = {}
    for block in view["blocks"]:
        if block["type"] != "input":
            continue
        el = block["element"]
        if el["type"] == "plain_text_input":
            state = {"type": el["type"], "value": el.get("initial_value")}
        else:
            state = {"type": el["type"], "selected_option": el["options"][0]}
        values[block["block_id"]] = {el["action_id"]: state}
    a = parse_assess_submission(values)
    assert (a.scenario, a.environment, a.minutes_to_fix) == (
        Scenario.CRITICAL_BUG, "staging", None)
    assert a.users_affected and a.root_cause_known and a.data_loss_if_rolled_back


def test_the_verdict_message_offers_the_recommended_card() -> None:
    a = answers(Scenario.SERVICE_DOWN)
    blocks = verdict_message(assess(a), a, version_hint="v1.2.2")
    assert block_kit_problems(blocks) == []
    text = json.dumps(blocks, ensure_ascii=False)
    assert "Roll back now (CRITICAL)" in text
    assert "v1.2.2" in text
    buttons = [el for b in blocks if b["type"] == "actions" for el in b["elements"]]
    assert len(buttons) == 1
    assert buttons[0]["action_id"] == AssessAction.OPEN_CARD == "rollbot.assess.open_card"
    assert buttons[0]["text"]["text"] == "Open pre-flight card: emergency"
    assert json.loads(buttons[0]["value"]) == {"procedure": "emergency",
                                               "environment": "production"}


def test_a_fix_forward_verdict_has_no_card_button() -> None:
    a = answers(Scenario.MINOR_BUG)
    blocks = verdict_message(assess(a), a, version_hint=None)
    assert block_kit_problems(blocks) == []
    assert not [b for b in blocks if b["type"] == "actions"]
    assert "Fix forward (LOW)" in json.dumps(blocks, ensure_ascii=False)


def test_reasons_are_escaped_for_mrkdwn() -> None:
    a = answers(Scenario.PERFORMANCE_DEGRADATION, minutes_to_fix=5)
    text = json.dumps(verdict_message(assess(a), a, version_hint="<!channel>"),
                      ensure_ascii=False)
    assert "(&lt; 15 minutes)" in text
    assert "&gt; 50%" in text
    assert "<!channel>" not in text


def test_every_verdict_message_is_within_block_kit_limits() -> None:
    for a in ALL_ANSWERS:
        for hint in (None, "v1.2.2", "v" + "9" * 300):
            assert block_kit_problems(verdict_message(assess(a), a, version_hint=hint)) == [], a
