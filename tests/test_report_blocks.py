"""The Edit report button and form: valid Block Kit, and the form shows what the report says."""

from handlers.blocks.after_run import report_actions, report_modal
from handlers.ids import Action, Block, Field, View
from handlers.metadata import RunRef, load
from slack_emulator.limits import block_kit_problems, modal_view_problems


def test_the_edit_report_button_points_at_the_run() -> None:
    blocks = report_actions(12)
    assert block_kit_problems(blocks) == []
    [button] = blocks[0]["elements"]
    assert button["action_id"] == Action.EDIT_REPORT.value
    assert button["text"]["text"] == "Edit report (Impact, Root Cause)"
    assert load(RunRef, button["value"]).run == 12


def test_the_form_shows_what_the_report_says_and_its_limits() -> None:
    view = report_modal(run_id=12, impact="checkout down", root_cause="x" * 4000,
                           max_impact=500, max_root_cause=3000)
    assert modal_view_problems(view) == []
    assert view["callback_id"] == View.EDIT_REPORT.value
    assert load(RunRef, view["private_metadata"]).run == 12
    inputs = {b["block_id"]: b for b in view["blocks"] if b["type"] == "input"}
    impact = inputs[Block.REPORT_IMPACT.value]
    cause = inputs[Block.REPORT_ROOT_CAUSE.value]
    assert impact["optional"] and cause["optional"]  # an emptied field clears it
    assert impact["element"]["action_id"] == Field.IMPACT.value
    assert impact["element"]["initial_value"] == "checkout down"
    assert impact["element"]["max_length"] == 500
    assert cause["element"]["multiline"] and cause["element"]["max_length"] == 3000
    assert cause["element"]["initial_value"] == "x" * 3000


def test_an_empty_report_opens_an_empty_form() -> None:
    view = report_modal(run_id=1, impact="", root_cause="", max_impact=500,
                           max_root_cause=3000)
    assert modal_view_problems(view) == []
    assert all("initial_value" not in b["element"] for b in view["blocks"]
               if b["type"] == "input")
