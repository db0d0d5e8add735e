"""The pre-flight card, the restore modal, and the replies to commands (plan, status, history)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.approvals import Pending, PendingState
from bot.events import StepInfo
from bot.fleet_view import FleetShape, name_list
from bot.model import Check, ProcedureName, RunRecord
from bot.procedures.catalog import TITLES
from bot.service import Plan
from handlers.blocks.fleet import fleet_checks, fleet_steps
from handlers.blocks.kit import (
    RUN_ICON,
    STEP_ICON,
    TIER_TEXT,
    Blocks,
    actions,
    button,
    clip,
    confirm_dialog,
    context,
    esc,
    header,
    mention,
    section,
)
from handlers.ids import Action, Block, Field, View
from handlers.metadata import CardRef


def _checks(checks: tuple[Check, ...]) -> str:
    lines = [f"{'✅' if c.ok else '❌'} *{esc(c.name)}*: {esc(clip(c.detail, 300))}"
             for c in checks]
    return "*Pre-flight*\n" + "\n".join(lines)


def _checks_blocks(checks: tuple[Check, ...], fleet: FleetShape | None) -> Blocks:
    return [section(_checks(checks))] if fleet is None else fleet_checks(checks, fleet)


def _steps_list(steps: tuple[StepInfo, ...]) -> str:
    lines = [f"{s.index + 1}. {esc(s.title)}{'  _(changes production)_' if s.destructive else ''}"
             for s in steps]
    return "*Steps*\n" + "\n".join(lines)



@dataclass(frozen=True)
class CardFacts:
    """What the card's buttons depend on; kept with the pending rollback to re-render it."""

    target: str
    procedure: ProcedureName
    ok: bool
    refusal: str


def card_facts(plan: Plan) -> CardFacts:
    return CardFacts(target=plan.preflight.target or "?", procedure=plan.request.procedure,
                     ok=plan.preflight.ok and bool(plan.steps),
                     refusal=plan.preflight.refusal)


def card_body(plan: Plan, fleet: FleetShape | None = None) -> Blocks:
    """The card's facts, which never change after it is posted; a fleet's per host."""
    r, pre = plan.request, plan.preflight
    target = pre.target or "?"
    title = f"Rollback {r.environment}: {pre.current} → {target}"
    emergency = r.procedure is ProcedureName.EMERGENCY
    lines = [f"*Procedure:* {TITLES[r.procedure].title}",
             f"*Requested by:* {mention(r.requested_by)}",
             f"*Reason:* {esc(r.reason) if r.reason else '_none given_'}"]
    if emergency:
        lines.insert(0, "🚨 *EMERGENCY*: runs after one confirmation; it does not restore data "
                        "on its own.")
    if fleet is not None:
        lines.append(f"*Hosts:* {len(fleet.hosts)} ({esc(name_list(fleet.hosts))})")
    blocks: Blocks = [header(("🚨 " if emergency else "") + title), section("\n".join(lines)),
                      *_checks_blocks(pre.checks, fleet)]
    if pre.ok and plan.steps:
        blocks += ([section(_steps_list(plan.steps))] if fleet is None
                   else fleet_steps(plan.steps, fleet))
    if r.procedure is ProcedureName.RESTORE and pre.backup is not None:
        blocks.append(section(
            f"⚠️ *Data loss:* writes since {pre.backup.modified:%Y-%m-%d %H:%M} UTC will be lost "
            f"(restoring `{esc(pre.backup.name)}`). A safety backup of the current database is "
            "taken first."))
    blocks.extend(migrations_warning(plan))
    return blocks


def migrations_warning(plan: Plan) -> Blocks:
    """A migration rollback is a data change: name what migrate_down undoes, send for the DBA."""
    pre = plan.preflight
    if plan.request.procedure is not ProcedureName.MIGRATIONS or not pre.migrations:
        return []
    names = ", ".join(f"`{esc(m)}`" for m in pre.migrations)
    return [section(f"⚠️ *Data change:* `migrate_down` undoes {names}. Data stored in what "
                    "it added (columns, tables) is lost: coordinate with the DBA before "
                    "confirming.")]


def card_state(facts: CardFacts, pending: Pending, *, now: datetime) -> Blocks:
    """The card's buttons and status line, for the pending rollback as it now is."""
    ref = CardRef(card=pending.id).dump()
    target = facts.target
    expires = f"Buttons expire at {pending.expires_at:%H:%M} UTC · card `{pending.id}`"
    if not facts.ok:
        return [section(f"🚫 *Cannot roll back:* {esc(clip(facts.refusal, 1500))}"),
                actions(Block.CARD_ACTIONS, button("Dismiss", Action.CANCEL_CARD, ref)),
                context(f"Nothing was changed · card `{pending.id}`")]
    if pending.state is PendingState.CANCELLED:
        return [context(f"🛑 Cancelled by {mention(pending.cancelled_by or '?')}; nothing was "
                        "run.")]
    if pending.expired(now) and pending.state is not PendingState.STARTED:
        return [context("⌛ This card expired; nothing was run. Type the command again for a "
                        "fresh pre-flight.")]
    cancel = button("Cancel", Action.CANCEL_CARD, ref)
    if pending.state is PendingState.AWAITING_SECOND_APPROVAL:
        return _awaiting_second(facts, pending, ref=ref, cancel=cancel, expires=expires)
    if facts.procedure is ProcedureName.RESTORE:
        go = button(f"Restore database and roll back to {target}", Action.CONFIRM_RESTORE, ref,
                    style="danger", confirm=confirm_dialog(
                        "Restore the database?",
                        "You will type the database name next. Writes since the backup will be "
                        "lost.", "Continue"))
    else:
        go = button(f"Roll back to {target}", Action.CONFIRM, ref, style="primary")
    return [actions(Block.CARD_ACTIONS, go, cancel), context(expires)]


def _awaiting_second(facts: CardFacts, pending: Pending, *, ref: str,
                     cancel: dict[str, Any], expires: str) -> Blocks:
    """Confirmed once; a second person (not the requester, not the confirmer) must approve."""
    target = facts.target
    if facts.procedure is ProcedureName.MIGRATIONS:
        what, label = "migration rollback", "Approve migration rollback"
        dialog = confirm_dialog("Approve migration rollback?",
                                f"This undoes the newest migration(s) and rolls back to {target}. "
                                "Data stored by them may be lost.", "Approve")
    else:
        what, label = "restore", "Approve restore"
        dialog = confirm_dialog("Approve database restore?",
                                f"This drops and restores the database and rolls back to "
                                f"{target}. Writes since the backup are lost.", "Approve restore")
    return [section(f"✅ {mention(pending.confirmed_by or '?')} confirmed the {what}. "
                    "*Waiting for a second approver* (not the requester, not the confirmer)."),
            actions(Block.CARD_ACTIONS,
                    button(label, Action.APPROVE_RESTORE, ref, style="danger", confirm=dialog),
                    cancel),
            context(expires)]



def restore_modal(*, pending_id: str, database: str, environment: str) -> dict[str, Any]:
    return {
        "type": "modal", "callback_id": View.RESTORE_CONFIRM.value,
        "private_metadata": CardRef(card=pending_id).dump(),
        "title": {"type": "plain_text", "text": "Confirm restore"},
        "submit": {"type": "plain_text", "text": "Restore"},
        "close": {"type": "plain_text", "text": "Back"},
        "blocks": [
            section(f"⚠️ This *drops* `{esc(database)}` in *{esc(environment)}* and restores it "
                    "from the backup. Writes since the backup are lost. A safety backup is taken "
                    "first."),
            {"type": "input", "block_id": Block.DB_NAME.value,
             "label": {"type": "plain_text", "text": f"Type the database name ({database})"},
             "element": {"type": "plain_text_input", "action_id": Field.DB_NAME.value,
                         "max_length": 64}},
        ],
    }


def permalink(channel: str, ts: str) -> str:
    return f"https://slack.com/archives/{channel}/p{ts.replace('.', '')}"


def history_message(runs: list[RunRecord], links: dict[int, str] | None = None) -> Blocks:
    if not runs:
        return [section("No rollbacks yet.")]
    lines = []
    for r in runs[:10]:
        took = f"{r.duration_s:.0f} s" if r.duration_s is not None else "…"
        lines.append(f"{RUN_ICON.get(r.status, '•')} #{r.id} {r.created_at:%m-%d %H:%M} "
                     f"{esc(r.environment)} {mention(r.requested_by)} "
                     f"{r.from_version or '?'} → {r.to_version or '?'} {r.procedure.value} "
                     f"*{r.status.value}* {took}"
                     + (f" <{links[r.id]}|live message>" if links and r.id in links else ""))
    return [section("*Last rollbacks*\n" + "\n".join(lines))]


def status_message(environment: str, run: RunRecord | None,
                   pending: list[dict[str, Any]] | None = None) -> Blocks:
    if run is None:
        blocks = [section(f"No rollback is running in {esc(environment)}.")]
    else:
        steps = "\n".join(f"{STEP_ICON[s.status]} {esc(s.title)}" for s in run.steps)
        blocks = [section(f"⏳ Run #{run.id} in {esc(run.environment)}: {run.procedure.value} "
                          f"{run.from_version or '?'} → {run.to_version or '?'}, by "
                          f"{mention(run.requested_by)} since {run.created_at:%H:%M:%S} UTC"
                          f"\n{steps}")]
    if pending:
        lines = [f"• {TIER_TEXT.get(str(p['tier']), p['tier'])} check of rollback "
                 f"#{p['run_id']} due {p['due_at']:%H:%M:%S} UTC" for p in pending[:10]]
        blocks.append(section("*Pending verification checks*\n" + "\n".join(lines)))
    return blocks


def plan_message(plan: Plan, fleet: FleetShape | None = None) -> Blocks:
    """A dry run: the checks and every exact command; nothing has run."""
    pre = plan.preflight
    blocks: Blocks = [header(f"Plan: {plan.request.environment} {pre.current} → "
                             f"{pre.target or '?'}"),
                      section(f"*{esc(plan.title)}* · nothing has run"),
                      *_checks_blocks(pre.checks, fleet), *migrations_warning(plan)]
    steps = plan.steps
    if fleet is not None:
        # Every host runs its own copy of the steps: the first host's commands stand for all
        # (the terminal's `rollbot plan` prints every host's).
        first = next((h for h in fleet.hosts if any(s.host == h for s in steps)), "")
        steps = tuple(s for s in steps if s.host in (first, ""))
        blocks.append(section(f"*Rollout:* {esc(fleet.rollout)}\nThe commands of "
                              f"{esc(first or 'each host')} are shown; every host runs the "
                              "same steps with its own compose file and URLs."))
    for s in steps[:40 if fleet is None else 30]:
        cmds = "\n".join(s.shows).replace("```", "'''")
        flag = "  _(changes production)_" if s.destructive else ""
        blocks.append(section(f"*{s.index + 1}. {esc(s.title)}*{flag}\n```{clip(cmds, 2700)}```"))
    return blocks

