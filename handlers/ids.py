"""Every Block Kit action_id, block_id and view callback_id rollbot uses: never bare strings."""

from __future__ import annotations

import re
from enum import StrEnum


class Action(StrEnum):
    CONFIRM = "rollbot.card.confirm"              # simple / migrations / emergency
    CONFIRM_RESTORE = "rollbot.card.confirm_restore"  # opens the database-name modal
    CANCEL_CARD = "rollbot.card.cancel"
    APPROVE_RESTORE = "rollbot.card.approve_restore"
    CANCEL_RUN = "rollbot.run.cancel"
    SET_ETA = "rollbot.notice.set_eta"
    NEXT_EMERGENCY = "rollbot.next.emergency"     # offered after a failed run
    NEXT_RESTORE = "rollbot.next.restore"
    VERIFY_AGAIN = "rollbot.verify.again"
    CHECKLIST_TOGGLE = "rollbot.checklist.toggle"
    AUTO_ROLL_BACK_NOW = "rollbot.auto.roll_back_now"
    AUTO_CANCEL = "rollbot.auto.cancel"
    NEXT_MIGRATIONS = "rollbot.next.migrations"
    VERDICT_HEALTHY = "rollbot.verify.healthy"
    VERDICT_REGRESSED = "rollbot.verify.regressed"
    EDIT_REPORT = "rollbot.report.edit"           # opens the Impact / Root Cause modal
    RECOVERY_RESUME = "rollbot.recovery.resume"        # a cancel left production down
    RECOVERY_PUT_BACK = "rollbot.recovery.put_back"
    RECOVERY_AGAIN = "rollbot.recovery.roll_back_again"  # after a put-back that is unhealthy


class Block(StrEnum):
    CARD_ACTIONS = "rollbot.card.actions"
    RUN_ACTIONS = "rollbot.run.actions"
    NOTICE_ACTIONS = "rollbot.notice.actions"
    VERIFY_ACTIONS = "rollbot.verify.actions"
    AUTO_ACTIONS = "rollbot.auto.actions"
    RECOVERY_ACTIONS = "rollbot.recovery.actions"
    DB_NAME = "rollbot.modal.db_name"
    ETA = "rollbot.modal.eta"
    REPORT_ACTIONS = "rollbot.report.actions"
    REPORT_IMPACT = "rollbot.modal.impact"
    REPORT_ROOT_CAUSE = "rollbot.modal.root_cause"


class Field(StrEnum):
    DB_NAME = "db_name"
    ETA = "eta"
    IMPACT = "impact"
    ROOT_CAUSE = "root_cause"


class Shortcut(StrEnum):
    ROLLBACK = "rollbot.shortcut.rollback"  # the message shortcut "Roll back this deploy"


class View(StrEnum):
    RESTORE_CONFIRM = "rollbot.view.restore_confirm"
    SET_ETA = "rollbot.view.set_eta"
    EDIT_REPORT = "rollbot.view.edit_report"


# The decision-matrix modal (`/rollback assess`).
class AssessView(StrEnum):
    ASSESS = "rollbot.view.assess"


class AssessBlock(StrEnum):
    ENVIRONMENT = "rollbot.assess.environment"
    SCENARIO = "rollbot.assess.scenario"
    USERS_AFFECTED = "rollbot.assess.users_affected"
    ROOT_CAUSE_KNOWN = "rollbot.assess.root_cause_known"
    MINUTES_TO_FIX = "rollbot.assess.minutes_to_fix"
    DATA_LOSS = "rollbot.assess.data_loss"
    PREVIOUS_STABLE = "rollbot.assess.previous_stable"
    ACTIONS = "rollbot.assess.actions"


class AssessField(StrEnum):
    ENVIRONMENT = "environment"
    SCENARIO = "scenario"
    USERS_AFFECTED = "users_affected"
    ROOT_CAUSE_KNOWN = "root_cause_known"
    MINUTES_TO_FIX = "minutes_to_fix"
    DATA_LOSS = "data_loss"
    PREVIOUS_STABLE = "previous_stable"


class AssessAction(StrEnum):
    OPEN_CARD = "rollbot.assess.open_card"


# The App Home tab and its modals (`handlers/front/home.py`).
class HomeAction(StrEnum):
    PLAN = "rollbot.home.plan"                  # opens the Plan a rollback modal
    ASSESS = "rollbot.home.assess"              # opens the decision-matrix modal
    UNQUARANTINE = "rollbot.home.unquarantine"  # opens the reason modal


class HomeBlock(StrEnum):
    BUTTONS = "rollbot.home.buttons"
    WATCH = "rollbot.home.watch"                # + ".<deploy id>": one per watched deploy
    QUARANTINED = "rollbot.home.quarantined"    # + ".<environment index>.<n>"
    PLAN_ENVIRONMENT = "rollbot.home.plan.environment"
    PLAN_VERSION = "rollbot.home.plan.version"
    PLAN_PROCEDURE = "rollbot.home.plan.procedure"
    PLAN_REASON = "rollbot.home.plan.reason"
    UNQUARANTINE_REASON = "rollbot.home.unquarantine.reason"


class HomeField(StrEnum):
    ENVIRONMENT = "environment"
    VERSION = "version"
    PROCEDURE = "procedure"
    REASON = "reason"


class HomeView(StrEnum):
    TAB = "rollbot.home"                        # the tab itself (views.publish)
    PLAN = "rollbot.view.home_plan"
    UNQUARANTINE = "rollbot.view.unquarantine"
    REFUSED = "rollbot.view.home_refused"       # a refusal, told in a modal (no channel here)


# A view's action_ids are unique in it: a button shown once per deploy or per version (the home
# tab) carries its action_id with numbers after it, and its listener takes both forms.
def numbered(action: StrEnum, *numbers: int) -> str:
    """``action`` with ``.n`` parts: unique in a view that shows the button more than once."""
    return ".".join([action.value, *(str(n) for n in numbers)])


def with_numbers(action: StrEnum) -> re.Pattern[str]:
    """What a listener matches: ``action`` alone, or ``numbered``."""
    return re.compile(rf"^{re.escape(action.value)}(\.[0-9]+)*$")
