"""The listener table: each Slack request rollbot takes, the ack it needs, and who handles it.

A row is data: what Slack sends (a command, an event, a button's ``action_id``, a modal's
``callback_id``), how it is acknowledged, and the front's method that does the work after the ack.
``handlers.app`` registers every row with one loop.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from bot.errors import InvalidInput
from bot.model import ProcedureName
from bot.recovery.offers import RecoveryChoice
from handlers.assess import parse_assess_submission
from handlers.front import Reply, SlackFront
from handlers.grammar import CommandKind, parse_command
from handlers.ids import (
    Action,
    AssessAction,
    AssessBlock,
    AssessView,
    Block,
    Field,
    HomeAction,
    HomeView,
    Shortcut,
    View,
    with_numbers,
)
from handlers.metadata import (
    AssessCardRef,
    CardRef,
    ChecklistRef,
    CheckRef,
    NextStep,
    NoticeRef,
    QuarantineRef,
    RecoveryRef,
    RunRef,
    load,
)

_MENTION = re.compile(r"<@[A-Z0-9]+(\|[^>]*)?>")
_SLOW_KINDS = {CommandKind.ROLLBACK, CommandKind.PLAN, CommandKind.VERSIONS, CommandKind.BACKUPS}


class Kind(Enum):
    """What Slack sends, and so which Bolt registration a row takes."""

    COMMAND = "command"
    EVENT = "event"
    ACTION = "action"
    VIEW = "view"
    SHORTCUT = "shortcut"  # a message shortcut (``message_action``), by its ``callback_id``


@dataclass(frozen=True)
class Request:
    """One request from Slack, as a row's handler reads it."""

    body: dict[str, Any]
    reply: Reply  # an ephemeral answer to the person who clicked or typed

    @property
    def user(self) -> str:
        return str(self.body["user"]["id"])

    @property
    def value(self) -> str:
        """The clicked button's value (typed metadata rollbot wrote)."""
        return str(self.body["actions"][0].get("value", ""))

    @property
    def trigger_id(self) -> str:
        return str(self.body["trigger_id"])

    @property
    def channel(self) -> str:
        return str(self.body.get("channel", {}).get("id", ""))

    @property
    def container(self) -> dict[str, Any]:
        """Where the clicked message is (``channel_id``, ``message_ts``)."""
        found: dict[str, Any] = self.body.get("container", {})
        return found

    @property
    def metadata(self) -> str | None:
        """A submitted modal's ``private_metadata``."""
        found: str | None = self.body["view"].get("private_metadata")
        return found

    @property
    def values(self) -> dict[str, Any]:
        """A submitted modal's ``state.values``."""
        found: dict[str, Any] = self.body["view"]["state"]["values"]
        return found

    def typed(self, block: Block, field: Field) -> str:
        """What was typed in one of the modal's inputs ("" when it was left empty)."""
        return str(self.values.get(block.value, {}).get(field.value, {}).get("value") or "")


Handle = Callable[[Request], Awaitable[None]]
Check = Callable[[Request], Awaitable[dict[str, str] | None]]
AckText = Callable[[Request], str | None]


@dataclass(frozen=True)
class Row:
    """One listener.

    The ack: plain by default (``ack()`` at once, the work after it); ``ack_text`` answers with a
    quick word; ``check`` is for modals, whose errors Slack takes only in the acknowledgement:
    it runs first, and its errors go back as ``response_action="errors"`` with nothing done.
    """

    kind: Kind
    matcher: str | re.Pattern[str]
    handle: Handle
    check: Check | None = None
    ack_text: AckText | None = None


class SeenEvents:
    """Event ids seen recently: Slack retries events, and Bolt does not de-duplicate them."""

    def __init__(self, ttl_s: float = 600.0) -> None:
        self._ttl = ttl_s
        self._seen: dict[str, float] = {}

    def first_time(self, key: str) -> bool:
        now = time.monotonic()
        self._seen = {k: t for k, t in self._seen.items() if now - t < self._ttl}
        if key in self._seen:
            return False
        self._seen[key] = now
        return True


def front_rows(front: SlackFront) -> list[Row]:
    """Every listener of the Slack front (the automatic rollback adds its own rows)."""
    commands, cards, run, after = front.commands, front.cards, front.run, front.after_run
    seen = SeenEvents()

    async def command(r: Request) -> None:
        await commands.on_command(user=str(r.body["user_id"]), channel=str(r.body["channel_id"]),
                                  channel_name=r.body.get("channel_name"),
                                  text=str(r.body.get("text", "")), reply=r.reply,
                                  trigger_id=r.body.get("trigger_id"))

    async def mention(r: Request) -> None:
        event = r.body.get("event", {})
        if not seen.first_time(str(r.body.get("event_id", event.get("ts")))):
            return
        text = _MENTION.sub("", str(event.get("text", ""))).strip()
        await commands.on_command(user=str(event.get("user", "")),
                                  channel=str(event.get("channel", "")), channel_name=None,
                                  text=text, reply=r.reply)

    def card(r: Request) -> str:
        return load(CardRef, r.value).card

    rows = [
        Row(Kind.COMMAND, "/rollback", command, ack_text=_checking_production),
        Row(Kind.EVENT, "app_mention", mention),
        Row(Kind.SHORTCUT, Shortcut.ROLLBACK.value, lambda r: front.shortcut.on_message_shortcut(
            user=r.user, channel=r.channel, channel_name=r.body.get("channel", {}).get("name"),
            message=dict(r.body.get("message") or {}), reply=r.reply)),
        Row(Kind.VIEW, AssessView.ASSESS.value, check=_assess_errors,
            handle=lambda r: commands.on_assessed(user=r.user, values=r.values)),
        Row(Kind.ACTION, AssessAction.OPEN_CARD.value, lambda r: cards.on_assess_open_card(
            user=r.user, channel=r.channel, ref=load(AssessCardRef, r.value), reply=r.reply)),
        # the card
        Row(Kind.ACTION, Action.CONFIRM.value, lambda r: cards.on_confirm(
            user=r.user, card=card(r), reply=r.reply)),
        Row(Kind.ACTION, Action.CONFIRM_RESTORE.value, lambda r: cards.on_confirm_restore(
            user=r.user, card=card(r), trigger_id=r.trigger_id, reply=r.reply)),
        Row(Kind.VIEW, View.RESTORE_CONFIRM.value,
            check=lambda r: cards.check_restore_submission(
                user=r.user, card=load(CardRef, r.metadata).card,
                typed=r.typed(Block.DB_NAME, Field.DB_NAME)),
            handle=lambda r: cards.on_restore_confirmed(user=r.user,
                                                        card=load(CardRef, r.metadata).card)),
        Row(Kind.ACTION, Action.APPROVE_RESTORE.value, lambda r: cards.on_approve(
            user=r.user, card=card(r), reply=r.reply)),
        Row(Kind.ACTION, Action.CANCEL_CARD.value, lambda r: cards.on_cancel_card(
            user=r.user, card=card(r), reply=r.reply)),
        *(Row(Kind.ACTION, action.value, _next_step(front, procedure)) for action, procedure in (
            (Action.NEXT_EMERGENCY, ProcedureName.EMERGENCY),
            (Action.NEXT_MIGRATIONS, ProcedureName.MIGRATIONS),
            (Action.NEXT_RESTORE, ProcedureName.RESTORE))),
        Row(Kind.ACTION, Action.RECOVERY_AGAIN.value, lambda r: cards.on_roll_back_again(
            user=r.user, run_id=load(RecoveryRef, r.value).run, channel=r.channel,
            reply=r.reply)),
        # the run and its notice
        Row(Kind.ACTION, Action.CANCEL_RUN.value, lambda r: run.cancel_run(
            user=r.user, run_id=load(RunRef, r.value).run, reply=r.reply)),
        *(Row(Kind.ACTION, action.value, _recovery(front, choice)) for action, choice in (
            (Action.RECOVERY_RESUME, RecoveryChoice.RESUME),
            (Action.RECOVERY_PUT_BACK, RecoveryChoice.PUT_BACK))),
        Row(Kind.ACTION, Action.SET_ETA.value, lambda r: run.on_set_eta(
            user=r.user, notice=NoticeRef(run=load(RunRef, r.value).run,
                                          channel=str(r.container["channel_id"]),
                                          ts=str(r.container["message_ts"])),
            trigger_id=r.trigger_id, reply=r.reply)),
        Row(Kind.VIEW, View.SET_ETA.value, check=lambda r: _eta_errors(front, r),
            handle=lambda r: run.on_eta_submitted(user=r.user,
                                                  notice=load(NoticeRef, r.metadata),
                                                  eta=r.typed(Block.ETA, Field.ETA))),
        # after the run
        Row(Kind.ACTION, Action.VERIFY_AGAIN.value, lambda r: after.on_verify_again(
            user=r.user, ref=load(CheckRef, r.value), reply=r.reply)),
        *(Row(Kind.ACTION, action.value, _verdict(front, verdict)) for action, verdict in (
            (Action.VERDICT_HEALTHY, "healthy"), (Action.VERDICT_REGRESSED, "regressed"))),
        Row(Kind.ACTION, Action.EDIT_REPORT.value, lambda r: after.on_edit_report(
            user=r.user, run_id=load(RunRef, r.value).run, trigger_id=r.trigger_id,
            reply=r.reply)),
        # An emptied field clears it: the modal showed what the report says now.
        Row(Kind.VIEW, View.EDIT_REPORT.value,
            check=lambda r: after.check_report_submission(
                user=r.user, run_id=load(RunRef, r.metadata).run,
                impact=r.typed(Block.REPORT_IMPACT, Field.IMPACT),
                root_cause=r.typed(Block.REPORT_ROOT_CAUSE, Field.ROOT_CAUSE)),
            handle=lambda r: after.on_report_submitted(
                user=r.user, run_id=load(RunRef, r.metadata).run,
                impact=r.typed(Block.REPORT_IMPACT, Field.IMPACT),
                root_cause=r.typed(Block.REPORT_ROOT_CAUSE, Field.ROOT_CAUSE))),
        Row(Kind.ACTION, re.compile(rf"^{re.escape(Action.CHECKLIST_TOGGLE.value)}\.[a-z0-9_]+$"),
            lambda r: after.on_checklist_toggle(user=r.user, ref=load(ChecklistRef, r.value),
                                                reply=r.reply)),
        *home_rows(front),
    ]
    return rows


def home_rows(front: SlackFront) -> list[Row]:
    """The App Home tab: opening it, its buttons, its modals (the watch's buttons are the
    automatic rollback's own rows)."""
    home = front.home

    def quarantined(r: Request) -> QuarantineRef:
        return load(QuarantineRef, r.metadata)

    return [
        Row(Kind.EVENT, "app_home_opened", lambda r: home.on_opened(
            user=str(r.body.get("event", {}).get("user", "")),
            tab=str(r.body.get("event", {}).get("tab", "home")))),
        Row(Kind.ACTION, HomeAction.PLAN.value, lambda r: home.on_plan(
            user=r.user, trigger_id=r.trigger_id)),
        Row(Kind.ACTION, HomeAction.ASSESS.value, lambda r: home.on_assess(
            user=r.user, trigger_id=r.trigger_id)),
        Row(Kind.ACTION, with_numbers(HomeAction.UNQUARANTINE), lambda r: home.on_unquarantine(
            user=r.user, ref=load(QuarantineRef, r.value), trigger_id=r.trigger_id)),
        Row(Kind.VIEW, HomeView.PLAN.value,
            check=lambda r: home.check_plan(user=r.user, values=r.values),
            handle=lambda r: home.on_plan_submitted(user=r.user, values=r.values)),
        Row(Kind.VIEW, HomeView.UNQUARANTINE.value,
            check=lambda r: home.check_unquarantine(user=r.user, ref=quarantined(r),
                                                    values=r.values),
            handle=lambda r: home.on_unquarantine_submitted(user=r.user, ref=quarantined(r),
                                                            values=r.values)),
    ]


def _checking_production(r: Request) -> str | None:
    """A quick word for commands that take a moment (SSH pre-flight); parsing is pure, no I/O."""
    try:
        kind = parse_command(str(r.body.get("text", ""))).kind
    except InvalidInput:
        return None
    return "⏳ Checking production…" if kind in _SLOW_KINDS else None


async def _assess_errors(r: Request) -> dict[str, str] | None:
    try:
        parse_assess_submission(r.values)  # pure: errors go in the ack
    except InvalidInput as exc:
        text = str(exc)
        block = (AssessBlock.ENVIRONMENT if "environment" in text.lower() else
                 AssessBlock.MINUTES_TO_FIX if "minute" in text.lower() else
                 AssessBlock.SCENARIO)
        return {block.value: text[:150]}
    return None


async def _eta_errors(front: SlackFront, r: Request) -> dict[str, str] | None:
    if refusal := await front.user_refusal(r.user, "set the fix ETA"):
        return {Block.ETA.value: refusal[:150]}
    return None


def _next_step(front: SlackFront, procedure: ProcedureName) -> Handle:
    async def handle(r: Request) -> None:
        ref = load(NextStep, r.value)
        await front.cards.on_next_step(user=r.user, channel=r.channel, procedure=procedure,
                                       environment=ref.environment, version=ref.version,
                                       reason=ref.reason, reply=r.reply)
    return handle


def _recovery(front: SlackFront, choice: RecoveryChoice) -> Handle:
    async def handle(r: Request) -> None:
        await front.run.on_recovery(user=r.user, run_id=load(RecoveryRef, r.value).run,
                                    choice=choice, channel=str(r.container.get("channel_id", "")),
                                    ts=str(r.container.get("message_ts", "")),
                                    blocks=list(r.body.get("message", {}).get("blocks", [])),
                                    reply=r.reply)
    return handle


def _verdict(front: SlackFront, verdict: str) -> Handle:
    async def handle(r: Request) -> None:
        await front.after_run.on_verdict(user=r.user, ref=load(CheckRef, r.value),
                                         verdict=verdict, reply=r.reply)
    return handle
