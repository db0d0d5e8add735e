"""The Bolt app: listeners acknowledge first, then hand over to the flows (``SlackFront``)."""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import InvalidInput
from bot.model import ProcedureName
from bot.recovery import RecoveryChoice
from handlers import blocks as ui
from handlers.assess import parse_assess_submission
from handlers.autorollback import SlackAutoRollback
from handlers.flows import Reply, SlackFront
from handlers.grammar import CommandKind, parse_command
from handlers.ids import Action, AssessAction, AssessBlock, AssessView, Block, Field, View
from handlers.metadata import (
    AssessCardRef,
    CardRef,
    ChecklistRef,
    CheckRef,
    DeployRef,
    NextStep,
    NoticeRef,
    RecoveryRef,
    RunRef,
    load,
)

log = logging.getLogger(__name__)

_MENTION = re.compile(r"<@[A-Z0-9]+(\|[^>]*)?>")
Listener = Callable[..., Awaitable[None]]
_SLOW_KINDS = {CommandKind.ROLLBACK, CommandKind.PLAN, CommandKind.VERSIONS, CommandKind.BACKUPS}


def respond_reply(respond: AsyncRespond) -> Reply:
    async def reply(blocks: ui.Blocks, text: str) -> None:
        await respond(text=text, blocks=blocks, response_type="ephemeral",
                      replace_original=False)
    return reply


def ephemeral_reply(client: AsyncWebClient, *, channel: str, user: str) -> Reply:
    async def reply(blocks: ui.Blocks, text: str) -> None:
        await client.chat_postEphemeral(channel=channel, user=user, text=text, blocks=blocks)
    return reply


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


def guarded(front: SlackFront) -> Callable[[Listener], Listener]:
    """Errors after the ack become a sentence for the person, never an unanswered request.

    (Bolt takes back an ack when the listener raises soon after it, and Slack then shows an error
    after 3 s.) Bolt reads the listener's parameter names, which ``functools.wraps`` keeps.
    """
    def decorate(listener: Listener) -> Listener:
        @functools.wraps(listener)
        async def wrapper(**kwargs: Any) -> None:
            respond = kwargs.get("respond")

            async def reply(blocks: ui.Blocks, text: str) -> None:
                if respond is not None:
                    await respond(text=text, blocks=blocks, response_type="ephemeral",
                                  replace_original=False)
                else:
                    log.warning("listener %s: %s", listener.__name__, text)

            await front.after_ack(listener(**kwargs), reply)
        return wrapper
    return decorate


def _ack_text(text: str) -> str | None:
    """A quick word for commands that take a moment (SSH pre-flight); parsing is pure, no I/O."""
    try:
        kind = parse_command(text).kind
    except InvalidInput:
        return None
    return "⏳ Checking production…" if kind in _SLOW_KINDS else None


def _user(body: dict[str, Any]) -> str:
    return str(body["user"]["id"])


def _value(body: dict[str, Any]) -> str:
    return str(body["actions"][0].get("value", ""))


def build_app(*, front: SlackFront, client: AsyncWebClient, signing_secret: str,
              auto: SlackAutoRollback) -> AsyncApp:
    app = AsyncApp(client=client, signing_secret=signing_secret,
                   raise_error_for_unhandled_request=False)
    seen = SeenEvents()
    safe = guarded(front)

    @app.command("/rollback")
    @safe
    async def rollback_command(ack: AsyncAck, command: dict[str, Any],
                               respond: AsyncRespond) -> None:
        text = str(command.get("text", ""))
        quick = _ack_text(text)
        if quick:
            await ack(text=quick)
        else:
            await ack()
        await front.on_command(user=str(command["user_id"]), channel=str(command["channel_id"]),
                               channel_name=command.get("channel_name"), text=text,
                               reply=respond_reply(respond),
                               trigger_id=command.get("trigger_id"))

    @app.event("app_mention")
    @safe
    async def mention(ack: AsyncAck, body: dict[str, Any], event: dict[str, Any],
                      client: AsyncWebClient) -> None:
        await ack()
        if not seen.first_time(str(body.get("event_id", event.get("ts")))):
            return
        text = _MENTION.sub("", str(event.get("text", ""))).strip()
        user, channel = str(event.get("user", "")), str(event.get("channel", ""))
        await front.on_command(user=user, channel=channel, channel_name=None, text=text,
                               reply=ephemeral_reply(client, channel=channel, user=user))

    @app.action(Action.CONFIRM.value)
    @safe
    async def confirm(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        await front.on_confirm(user=_user(body), card=load(CardRef, _value(body)).card,
                               reply=respond_reply(respond))

    @app.action(Action.CONFIRM_RESTORE.value)
    @safe
    async def confirm_restore(ack: AsyncAck, body: dict[str, Any],
                              respond: AsyncRespond) -> None:
        await ack()
        await front.on_confirm_restore(user=_user(body), card=load(CardRef, _value(body)).card,
                                       trigger_id=str(body["trigger_id"]),
                                       reply=respond_reply(respond))

    @app.view(View.RESTORE_CONFIRM.value)
    @safe
    async def restore_submitted(ack: AsyncAck, body: dict[str, Any],
                                view: dict[str, Any]) -> None:
        card = load(CardRef, view.get("private_metadata")).card
        typed = str(view["state"]["values"][Block.DB_NAME.value][Field.DB_NAME.value]
                    .get("value") or "")
        # Slack takes modal errors only in the acknowledgement: one quick indexed lookup first.
        errors = await front.check_restore_submission(user=_user(body), card=card, typed=typed)
        if errors:
            await ack(response_action="errors", errors=errors)
            return
        await ack()
        await front.on_restore_confirmed(user=_user(body), card=card)

    @app.action(Action.APPROVE_RESTORE.value)
    @safe
    async def approve(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        await front.on_approve(user=_user(body), card=load(CardRef, _value(body)).card,
                               reply=respond_reply(respond))

    @app.action(Action.CANCEL_CARD.value)
    @safe
    async def cancel_card(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        await front.on_cancel_card(user=_user(body), card=load(CardRef, _value(body)).card,
                                   reply=respond_reply(respond))

    @app.action(Action.CANCEL_RUN.value)
    @safe
    async def cancel_run(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        await front.cancel_run(user=_user(body), run_id=load(RunRef, _value(body)).run,
                               reply=respond_reply(respond))

    @app.action(Action.SET_ETA.value)
    @safe
    async def set_eta(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        notice = NoticeRef(run=load(RunRef, _value(body)).run,
                           channel=str(body["container"]["channel_id"]),
                           ts=str(body["container"]["message_ts"]))
        await front.on_set_eta(user=_user(body), notice=notice,
                               trigger_id=str(body["trigger_id"]), reply=respond_reply(respond))

    @app.view(View.SET_ETA.value)
    @safe
    async def eta_submitted(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        # Slack takes modal errors only in the acknowledgement: the access check comes first.
        if refusal := await front.user_refusal(_user(body), "set the fix ETA"):
            await ack(response_action="errors", errors={Block.ETA.value: refusal[:150]})
            return
        await ack()
        eta = str(view["state"]["values"][Block.ETA.value][Field.ETA.value].get("value") or "")
        await front.on_eta_submitted(user=_user(body),
                                     notice=load(NoticeRef, view.get("private_metadata")),
                                     eta=eta)

    @app.action(Action.EDIT_REPORT.value)
    @safe
    async def edit_report(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        await front.on_edit_report(user=_user(body), run_id=load(RunRef, _value(body)).run,
                                   trigger_id=str(body["trigger_id"]),
                                   reply=respond_reply(respond))

    @app.view(View.EDIT_REPORT.value)
    @safe
    async def report_submitted(ack: AsyncAck, body: dict[str, Any],
                               view: dict[str, Any]) -> None:
        run_id = load(RunRef, view.get("private_metadata")).run
        values = view["state"]["values"]
        # An emptied field clears it: the modal showed what the report says now.
        impact = str(values.get(Block.REPORT_IMPACT.value, {}).get(Field.IMPACT.value, {})
                     .get("value") or "")
        root_cause = str(values.get(Block.REPORT_ROOT_CAUSE.value, {})
                         .get(Field.ROOT_CAUSE.value, {}).get("value") or "")
        # Slack takes modal errors only in the acknowledgement.
        errors = await front.check_report_submission(user=_user(body), run_id=run_id,
                                                     impact=impact, root_cause=root_cause)
        if errors:
            await ack(response_action="errors", errors=errors)
            return
        await ack()
        await front.on_report_submitted(user=_user(body), run_id=run_id, impact=impact,
                                        root_cause=root_cause)

    @app.action(re.compile(rf"^{re.escape(Action.CHECKLIST_TOGGLE.value)}\.[a-z0-9_]+$"))
    @safe
    async def checklist_toggle(ack: AsyncAck, body: dict[str, Any],
                               respond: AsyncRespond) -> None:
        await ack()
        await front.on_checklist_toggle(user=_user(body), ref=load(ChecklistRef, _value(body)),
                                        reply=respond_reply(respond))

    @app.view(AssessView.ASSESS.value)
    @safe
    async def assessed(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        try:
            parse_assess_submission(view["state"]["values"])  # pure: errors go in the ack
        except InvalidInput as exc:
            text = str(exc)
            block = (AssessBlock.ENVIRONMENT if "environment" in text.lower() else
                     AssessBlock.MINUTES_TO_FIX if "minute" in text.lower() else
                     AssessBlock.SCENARIO)
            await ack(response_action="errors", errors={block.value: text[:150]})
            return
        await ack()
        await front.on_assessed(user=_user(body), values=view["state"]["values"])

    @app.action(AssessAction.OPEN_CARD.value)
    @safe
    async def assess_open_card(ack: AsyncAck, body: dict[str, Any],
                               respond: AsyncRespond) -> None:
        await ack()
        await front.on_assess_open_card(user=_user(body),
                                        channel=str(body.get("channel", {}).get("id", "")),
                                        ref=load(AssessCardRef, _value(body)),
                                        reply=respond_reply(respond))

    @app.action(Action.AUTO_ROLL_BACK_NOW.value)
    @safe
    async def auto_now(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        await auto.on_roll_back_now(user=_user(body), deploy_id=load(DeployRef,
                                                                     _value(body)).deploy,
                                    reply=respond_reply(respond))

    @app.action(Action.AUTO_CANCEL.value)
    @safe
    async def auto_cancel(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        await auto.on_cancel(user=_user(body), deploy_id=load(DeployRef, _value(body)).deploy,
                             reply=respond_reply(respond))

    @app.action(Action.VERIFY_AGAIN.value)
    @safe
    async def verify_again(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        await front.on_verify_again(user=_user(body), ref=load(CheckRef, _value(body)),
                                    reply=respond_reply(respond))

    for action, verdict in ((Action.VERDICT_HEALTHY, "healthy"),
                            (Action.VERDICT_REGRESSED, "regressed")):
        _register_verdict(app, front, action, verdict)

    for action, procedure in ((Action.NEXT_EMERGENCY, ProcedureName.EMERGENCY),
                              (Action.NEXT_MIGRATIONS, ProcedureName.MIGRATIONS),
                              (Action.NEXT_RESTORE, ProcedureName.RESTORE)):
        _register_next(app, front, action, procedure)

    for action, choice in ((Action.RECOVERY_RESUME, RecoveryChoice.RESUME),
                           (Action.RECOVERY_PUT_BACK, RecoveryChoice.PUT_BACK)):
        _register_recovery(app, front, action, choice)

    @app.action(Action.RECOVERY_AGAIN.value)
    @safe
    async def roll_back_again(ack: AsyncAck, body: dict[str, Any],
                              respond: AsyncRespond) -> None:
        await ack()
        await front.on_roll_back_again(user=_user(body),
                                       run_id=load(RecoveryRef, _value(body)).run,
                                       channel=str(body.get("channel", {}).get("id", "")),
                                       reply=respond_reply(respond))

    @app.error
    async def on_error(error: Exception, body: dict[str, Any]) -> None:
        log.error("Slack listener failed: %s", error, exc_info=error)

    return app


def _register_verdict(app: AsyncApp, front: SlackFront, action: Action, verdict: str) -> None:
    @app.action(action.value)
    @guarded(front)
    async def answer(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        await front.on_verdict(user=_user(body), ref=load(CheckRef, _value(body)),
                               verdict=verdict, reply=respond_reply(respond))


def _register_next(app: AsyncApp, front: SlackFront, action: Action,
                   procedure: ProcedureName) -> None:
    @app.action(action.value)
    @guarded(front)
    async def next_step(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        ref = load(NextStep, _value(body))
        channel = str(body.get("channel", {}).get("id", ""))
        await front.on_next_step(user=_user(body), channel=channel, procedure=procedure,
                                 environment=ref.environment, version=ref.version,
                                 reply=respond_reply(respond))


def _register_recovery(app: AsyncApp, front: SlackFront, action: Action,
                       choice: RecoveryChoice) -> None:
    @app.action(action.value)
    @guarded(front)
    async def choose(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        container = body.get("container", {})
        await front.on_recovery(user=_user(body), run_id=load(RecoveryRef, _value(body)).run,
                                choice=choice, channel=str(container.get("channel_id", "")),
                                ts=str(container.get("message_ts", "")),
                                blocks=list(body.get("message", {}).get("blocks", [])),
                                reply=respond_reply(respond))
