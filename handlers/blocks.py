"""Block Kit builders: pure functions from domain values to Slack message and view dicts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bot.approvals import Pending, PendingState
from bot.events import StepInfo
from bot.model import (
    Check,
    ProcedureName,
    RunOutcome,
    RunRecord,
    RunStatus,
    StepStatus,
    VerificationResult,
)
from bot.post_rollback.checklist import ITEMS as CHECKLIST
from bot.post_rollback.checklist import Tick
from bot.procedures.catalog import TITLES
from bot.recovery import left_down, put_back_refusal
from bot.service import Plan
from handlers.grammar import HELP
from handlers.ids import Action, Block, Field, View
from handlers.metadata import (
    CardRef,
    ChecklistRef,
    CheckRef,
    NextStep,
    NoticeRef,
    RecoveryRef,
    RunRef,
)

Blocks = list[dict[str, Any]]
SECTION_LIMIT = 3000
_ICON = {
    StepStatus.PENDING: "⬜", StepStatus.RUNNING: "⏳", StepStatus.SUCCEEDED: "✅",
    StepStatus.FAILED: "❌", StepStatus.SKIPPED: "⏭️",
}
_RUN_ICON = {
    RunStatus.SUCCEEDED: "✅", RunStatus.FAILED: "❌", RunStatus.CANCELLED: "🛑",
    RunStatus.REFUSED: "🚫", RunStatus.RESTORE_RECOMMENDED: "🚨", RunStatus.INTERRUPTED: "⚠️",
    RunStatus.RUNNING: "⏳", RunStatus.PREFLIGHT: "⏳",
}


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


def _checks(checks: tuple[Check, ...]) -> str:
    lines = [f"{'✅' if c.ok else '❌'} *{esc(c.name)}*: {esc(clip(c.detail, 300))}"
             for c in checks]
    return "*Pre-flight*\n" + "\n".join(lines)


def _steps_list(steps: tuple[StepInfo, ...]) -> str:
    lines = [f"{s.index + 1}. {esc(s.title)}{'  _(changes production)_' if s.destructive else ''}"
             for s in steps]
    return "*Steps*\n" + "\n".join(lines)


# --- messages -------------------------------------------------------------------------------

def help_message(problem: str = "") -> Blocks:
    blocks = [section(f"⚠️ {esc(problem)}")] if problem else []
    return [*blocks, section(HELP)]


def refusal(reason: str) -> Blocks:
    return [section(f"🚫 {esc(reason)}")]


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


def card(plan: Plan, pending: Pending, *, now: datetime) -> Blocks:
    """The pre-flight card: what runs → the target, why it is safe, and the buttons."""
    return [*card_body(plan), *card_state(card_facts(plan), pending, now=now)]


def card_body(plan: Plan) -> Blocks:
    """The card's facts, which never change after it is posted."""
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
    blocks: Blocks = [header(("🚨 " if emergency else "") + title), section("\n".join(lines)),
                      section(_checks(pre.checks))]
    if pre.ok and plan.steps:
        blocks.append(section(_steps_list(plan.steps)))
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


@dataclass
class LiveState:
    """What the live message shows; updated by the live observer, rendered by ``live_message``."""

    run_id: int
    environment: str
    procedure: ProcedureName
    from_version: str
    to_version: str
    requested_by: str
    confirmed_by: tuple[str, ...]
    reason: str
    started_at: datetime
    steps: list[StepInfo] = field(default_factory=list)
    status: dict[int, StepStatus] = field(default_factory=dict)
    began: dict[int, datetime] = field(default_factory=dict)
    took: dict[int, float] = field(default_factory=dict)
    host_state: str = ""
    failure: str = ""
    failure_tail: str = ""
    outcome: RunOutcome | None = None
    cancel_requested_by: str | None = None
    # A run that continues one cancelled with production down (Resume / Put back):
    started_down: bool = False
    earlier_done: tuple[str, ...] = ()   # step keys done by the runs before it
    continues: int = 0                   # the cancelled run's id
    recovery_versions: tuple[str, str] | None = None  # (what ran before, the rollback's target)


def live_message(s: LiveState, *, now: datetime) -> Blocks:
    o = s.outcome
    if o is None:
        head = f"⏳ Rolling back {s.environment}: {s.from_version} → {s.to_version}"
    elif o.status is RunStatus.SUCCEEDED:
        head = f"✅ Rolled back {s.environment} to {s.to_version}"
    else:
        head = f"{_RUN_ICON.get(o.status, '❌')} Rollback {o.status.value.replace('_', ' ')}: " \
               f"{s.environment} {s.from_version} → {s.to_version}"
    down = o is not None and o.status is RunStatus.CANCELLED and left_down(
        o.steps, started_down=s.started_down)
    if down:
        head = f"🔴 Rollback cancelled: {s.environment} is DOWN"
    elif s.procedure is ProcedureName.PUT_BACK:
        head = _put_back_head(s) or head
    who = f"*Requested by:* {mention(s.requested_by)}"
    if s.confirmed_by:
        who += f" · *confirmed by:* {', '.join(mention(u) for u in s.confirmed_by)}"
    info = [f"*Procedure:* {TITLES[s.procedure].title}", who,
            f"*Reason:* {esc(s.reason) if s.reason else '_none given_'}"]
    lines = []
    for step in s.steps:
        st = s.status.get(step.index, StepStatus.PENDING)
        if st is StepStatus.RUNNING and step.index in s.began:
            took = f" ({(now - s.began[step.index]).total_seconds():.0f} s…)"
        elif step.index in s.took:
            took = f" ({s.took[step.index]:.1f} s)"
        else:
            took = ""
        lines.append(f"{_ICON[st]} {step.index + 1}. {esc(step.title)}{took}")
    blocks: Blocks = [header(head), section("\n".join(info)),
                      section("*Steps*\n" + "\n".join(lines))]
    if s.failure:
        text = f"*What failed:* {esc(s.failure)}"
        if s.failure_tail:
            tail = clip(s.failure_tail, 1800).replace("```", "'''")
            text += f"\n```{tail}```"
        blocks.append(section(text))
    if s.host_state:
        blocks.append(section(f"*Host state:* {esc(s.host_state)}"))
    if o is not None:
        blocks.append(section(esc(o.message)))
    if down:
        blocks.extend(recovery_offer(s))
    elif (s.procedure is ProcedureName.PUT_BACK and s.continues and o is not None
          and o.status not in (RunStatus.SUCCEEDED, RunStatus.REFUSED)):
        blocks.extend(roll_back_again(s))
    elapsed = ((now - s.started_at).total_seconds())
    run = f"Run #{s.run_id}" if s.run_id > 0 else "Pre-flight"
    blocks.append(context(f"{run} · started {s.started_at:%H:%M:%S} UTC · "
                          f"{elapsed:.0f} s · command output in the thread"))
    if o is None and s.run_id > 0:  # the run exists once the lock is taken
        if s.cancel_requested_by:
            blocks.append(context(f"🛑 Cancel requested by {mention(s.cancel_requested_by)}: "
                                  "stopping before the next step."))
        else:
            blocks.append(actions(Block.RUN_ACTIONS, button(
                "Cancel run", Action.CANCEL_RUN, RunRef(run=s.run_id).dump(), style="danger",
                confirm=confirm_dialog("Cancel this rollback?",
                                       "It stops before the next step; the step running now "
                                       "finishes first.", "Cancel run", "Keep running"))))
    return blocks


def _put_back_head(s: LiveState) -> str:
    o = s.outcome
    if o is None:
        return f"⏳ Putting back {s.to_version} in {s.environment}"
    if o.status is RunStatus.SUCCEEDED:
        return f"✅ {s.environment} is back on {s.to_version}, healthy"
    if any(r.key == "wait_healthy" and r.status is StepStatus.FAILED for r in o.steps):
        return f"⚠️ {s.to_version} is back up in {s.environment} but NOT healthy"
    return ""


def _versions(s: LiveState) -> tuple[str, str]:
    return s.recovery_versions or (s.from_version, s.to_version)


def recovery_offer(s: LiveState) -> Blocks:
    """Production is DOWN after a cancel: what state it is in, Resume and Put back."""
    o = s.outcome
    assert o is not None
    old, target = _versions(s)
    done = {r.key for r in o.steps if r.status is StepStatus.SUCCEEDED} | set(s.earlier_done)
    why_not = put_back_refusal(done, run_id=o.run_id, from_version=old)
    ref = RecoveryRef(run=o.run_id).dump()
    lines = [f"🔴 *Production is DOWN.* The host is left: {esc(o.host_state)}.",
             f"• *Resume rollback*: continue to {esc(target)} from the step where it stopped "
             "(a new pre-flight first; steps already done are not repeated)."]
    buttons = [button("Resume rollback", Action.RECOVERY_RESUME, ref, style="primary",
                      confirm=confirm_dialog(
                          "Resume the rollback?",
                          f"It continues to {target} from the step where it stopped.",
                          "Resume rollback", "Not now"))]
    if why_not:
        lines.append(f"• {esc(why_not)}")
    else:
        how = ("restore the compose file copy the rollback kept, start" if "switch_version" in done
               else "the compose file still names it: start")
        lines.append(f"• *Put back what ran before*: {how} {esc(old)} again and check its "
                     "health.")
        buttons.append(button("Put back what ran before", Action.RECOVERY_PUT_BACK, ref,
                              confirm=confirm_dialog(
                                  "Put back what ran before?",
                                  f"It starts {old} again (the version the rollback was "
                                  "leaving), then checks its health.",
                                  "Put back", "Not now")))
    return [section("\n".join(lines)), actions(Block.RECOVERY_ACTIONS, *buttons),
            context("Allowed users only; the first click decides and is recorded.")]


def recovery_chosen(label: str, user: str, *, now: datetime) -> dict[str, Any]:
    return context(f"▶️ {mention(user)} chose *{esc(label)}* at {now:%H:%M:%S} UTC: it runs "
                   "in the message below.")


def roll_back_again(s: LiveState) -> Blocks:
    """After a put-back that did not end healthy: offer the rollback again (a fresh card)."""
    _, target = _versions(s)
    return [actions(Block.RECOVERY_ACTIONS, button(
                f"Roll back to {target} again", Action.RECOVERY_AGAIN,
                RecoveryRef(run=s.continues).dump(), style="primary")),
            context("Opens a new pre-flight card; nothing runs without its confirmation.")]


def step_output(title: str, index: int, lines: list[str], *, done: StepStatus | None) -> str:
    """A thread message with one step's command output (its tail)."""
    icon = _ICON[done] if done else "⏳"
    body = "\n".join(lines)[-2500:].replace("```", "'''")
    return f"{icon} *{index + 1}. {esc(title)}*\n```{body or ' '}```"


def notice_success(*, version: str, eta: str, run_id: int, eta_set_by: str | None = None
                   ) -> Blocks:
    """The spec's stakeholder message, with a Set ETA button."""
    text = (f"Rollback completed. Service restored to {version}. Investigating root cause. "
            f"ETA for fix: {esc(eta)}")
    blocks: Blocks = [section(text)]
    if eta_set_by:
        blocks.append(context(f"ETA set by {mention(eta_set_by)}"))
    blocks.append(actions(Block.NOTICE_ACTIONS, button("Set ETA", Action.SET_ETA,
                                                       RunRef(run=run_id).dump())))
    return blocks


def notice_failure(o: RunOutcome, *, environment: str) -> Blocks:
    """What failed, the host's state, and the next recommended actions as buttons."""
    icon = _RUN_ICON.get(o.status, "❌")
    text = (f"{icon} *Rollback #{o.run_id} did not complete* ({o.status.value.replace('_', ' ')})"
            f"\n{esc(o.message)}\n*Host state:* {esc(o.host_state)}")
    target = o.to_version or ""
    blocks: Blocks = [section(text)]
    if target and o.status in (RunStatus.FAILED, RunStatus.RESTORE_RECOMMENDED):
        ref = NextStep(run=o.run_id, environment=environment, version=target).dump()
        buttons = [] if o.status is RunStatus.RESTORE_RECOMMENDED else [
            button(f"Emergency rollback to {target}", Action.NEXT_EMERGENCY, ref)]
        buttons.append(button("Restore database from backup", Action.NEXT_RESTORE, ref,
                              style="danger"))
        blocks.append(actions(Block.NOTICE_ACTIONS, *buttons))
        blocks.append(context("Each button opens a new pre-flight card; nothing runs without "
                              "its confirmation."))
    return blocks


def notice_text(blocks: Blocks) -> str:
    return " ".join(b["text"]["text"] for b in blocks if b["type"] == "section")[:3000]


# --- views ----------------------------------------------------------------------------------

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


def eta_modal(*, notice: NoticeRef, current: str) -> dict[str, Any]:
    return {
        "type": "modal", "callback_id": View.SET_ETA.value,
        "private_metadata": notice.dump(),
        "title": {"type": "plain_text", "text": "ETA for the fix"},
        "submit": {"type": "plain_text", "text": "Set ETA"},
        "blocks": [{"type": "input", "block_id": Block.ETA.value,
                    "label": {"type": "plain_text", "text": "When do you expect the fix?"},
                    "element": {"type": "plain_text_input", "action_id": Field.ETA.value,
                                "max_length": 100,
                                "initial_value": "" if current == "TBD" else current,
                                "placeholder": {"type": "plain_text",
                                                "text": "e.g. 2 hours, 16:00 UTC"}}}],
    }


# --- status, history ------------------------------------------------------------------------

def permalink(channel: str, ts: str) -> str:
    return f"https://slack.com/archives/{channel}/p{ts.replace('.', '')}"


def history_message(runs: list[RunRecord], links: dict[int, str] | None = None) -> Blocks:
    if not runs:
        return [section("No rollbacks yet.")]
    lines = []
    for r in runs[:10]:
        took = f"{r.duration_s:.0f} s" if r.duration_s is not None else "…"
        lines.append(f"{_RUN_ICON.get(r.status, '•')} #{r.id} {r.created_at:%m-%d %H:%M} "
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
        steps = "\n".join(f"{_ICON[s.status]} {esc(s.title)}" for s in run.steps)
        blocks = [section(f"⏳ Run #{run.id} in {esc(run.environment)}: {run.procedure.value} "
                          f"{run.from_version or '?'} → {run.to_version or '?'}, by "
                          f"{mention(run.requested_by)} since {run.created_at:%H:%M:%S} UTC"
                          f"\n{steps}")]
    if pending:
        lines = [f"• {_TIER_TEXT.get(str(p['tier']), p['tier'])} check of rollback "
                 f"#{p['run_id']} due {p['due_at']:%H:%M:%S} UTC" for p in pending[:10]]
        blocks.append(section("*Pending verification checks*\n" + "\n".join(lines)))
    return blocks


def plan_message(plan: Plan) -> Blocks:
    """A dry run: the checks and every exact command; nothing has run."""
    pre = plan.preflight
    blocks: Blocks = [header(f"Plan: {plan.request.environment} {pre.current} → "
                             f"{pre.target or '?'}"),
                      section(f"*{esc(plan.title)}* · nothing has run"),
                      section(_checks(pre.checks)), *migrations_warning(plan)]
    for s in plan.steps[:40]:
        cmds = "\n".join(s.shows).replace("```", "'''")
        flag = "  _(changes production)_" if s.destructive else ""
        blocks.append(section(f"*{s.index + 1}. {esc(s.title)}*{flag}\n```{clip(cmds, 2700)}```"))
    return blocks


# --- verification -----------------------------------------------------------------------------

_TIER_TEXT = {"immediate": "Immediate", "extended": "Extended", "comprehensive": "Comprehensive"}


def verification_thread(result: VerificationResult) -> str:
    """The full result, for the run's thread: what was checked, each result, timings."""
    late = f", {result.late_s:.0f} s late (rollbot was down)" if result.late_s >= 60 else ""
    head = (f"{'✅' if result.ok else '❌'} *{_TIER_TEXT[result.tier.value]} verification* "
            f"(due {result.due_at:%H:%M:%S} UTC, ran {result.ran_at:%H:%M:%S}{late})")
    lines = [f"{'✅' if i.ok else '❌'} *{esc(i.name)}* ({i.duration_s:.1f} s): "
             f"{esc(clip(i.detail, 300))}" for i in result.items]
    return clip(head + "\n" + "\n".join(lines), SECTION_LIMIT)


def verification_status(result: VerificationResult, *, run_id: int, environment: str,
                        version: str, requested_by: str, oncall: tuple[str, ...],
                        check_id: int) -> Blocks:
    """The one-line status in the incidents channel, with what a person can do next."""
    tier = _TIER_TEXT[result.tier.value]
    ref = CheckRef(run=run_id, check=check_id, tier=result.tier.value).dump()
    if result.ok:
        line = (f"✅ {tier} verification of rollback #{run_id} ({environment} {version}): "
                f"all {len(result.items)} checks green.")
        blocks: Blocks = [section(line)]
    else:
        failed = ", ".join(f"{i.name} ({clip(i.detail, 80)})" for i in result.items if not i.ok)
        who = " ".join([mention(requested_by), *(f"<!subteam^{g}>" for g in oncall)])
        line = (f"❌ {tier} verification of rollback #{run_id} ({environment} {version}) "
                f"FAILED: {esc(failed)} {who}")
        nxt = NextStep(run=run_id, environment=environment, version=version).dump()
        blocks = [section(clip(line, SECTION_LIMIT)), actions(
            Block.VERIFY_ACTIONS,
            button("Run the check again", Action.VERIFY_AGAIN, ref),
            button(f"Emergency rollback to {version}", Action.NEXT_EMERGENCY, nxt),
            button("Restore database from backup", Action.NEXT_RESTORE, nxt, style="danger"))]
    blocks.append({"type": "actions", "block_id": f"{Block.VERIFY_ACTIONS.value}.verdict",
                   "elements": [button("Healthy", Action.VERDICT_HEALTHY, ref),
                                button("Regressed", Action.VERDICT_REGRESSED, ref)]})
    blocks.append(context("Dashboards agree? Answer Healthy or Regressed; it goes in the "
                          "rollback report."))
    return blocks


# --- checklist --------------------------------------------------------------------------------

def checklist_message(run_id: int, ticks: dict[str, Tick]) -> Blocks:
    """The spec's Rollback Checklist: rollbot's ticks with by-what and when, buttons for people."""
    blocks: Blocks = [header(f"Rollback checklist · run #{run_id}")]
    for phase in ("Pre-Rollback", "During Rollback", "Post-Rollback"):
        lines = []
        for item in (i for i in CHECKLIST if i.phase == phase and not i.human):
            t = ticks.get(item.key)
            lines.append(f"☑️ {item.text} · _{esc(t.done_by)}, {t.done_at:%H:%M} UTC_" if t
                         else f"⬜ {item.text}")
        blocks.append(section(f"*{phase}*\n" + "\n".join(lines)))
        for item in (i for i in CHECKLIST if i.phase == phase and i.human):
            t = ticks.get(item.key)
            text = (f"☑️ {item.text} · _{mention(t.done_by)}, {t.done_at:%H:%M} UTC_" if t
                    else f"⬜ {item.text}")
            block = section(text)
            toggle = button("Untick" if t else "Tick", Action.CHECKLIST_TOGGLE,
                            ChecklistRef(run=run_id, item=item.key).dump())
            toggle["action_id"] = f"{Action.CHECKLIST_TOGGLE.value}.{item.key}"  # unique
            block["accessory"] = toggle
            blocks.append(block)
    blocks.append(context("rollbot ticks what it did itself; anyone here can tick the rest."))
    return blocks


# --- the rollback report --------------------------------------------------------------------

def report_actions(run_id: int) -> Blocks:
    """The Edit report button, shown under the run's checklist in its thread."""
    return [actions(Block.REPORT_ACTIONS, button("Edit report (Impact, Root Cause)",
                                                 Action.EDIT_REPORT, RunRef(run=run_id).dump())),
            context("The rollback report is uploaded in this thread; people write its Impact "
                    "and Root Cause, rollbot the rest.")]


def report_modal(*, run_id: int, impact: str, root_cause: str, max_impact: int,
                 max_root_cause: int) -> dict[str, Any]:
    """Impact and Root Cause of run #N's report; both optional, an empty field clears it."""
    def field(block: Block, action: Field, label: str, value: str, limit: int,
              hint: str, *, multiline: bool) -> dict[str, Any]:
        element: dict[str, Any] = {"type": "plain_text_input", "action_id": action.value,
                                   "max_length": limit, "multiline": multiline,
                                   "placeholder": {"type": "plain_text", "text": hint}}
        if value:
            element["initial_value"] = value[:limit]
        return {"type": "input", "block_id": block.value, "optional": True,
                "label": {"type": "plain_text", "text": label}, "element": element}

    return {
        "type": "modal", "callback_id": View.EDIT_REPORT.value,
        "private_metadata": RunRef(run=run_id).dump(),
        "title": {"type": "plain_text", "text": f"Report of run #{run_id}"[:24]},
        "submit": {"type": "plain_text", "text": "Save"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            field(Block.REPORT_IMPACT, Field.IMPACT, "Impact", impact, max_impact,
                  "e.g. about 1,200 users saw failed checkouts for 25 min", multiline=False),
            field(Block.REPORT_ROOT_CAUSE, Field.ROOT_CAUSE, "Root Cause", root_cause,
                  max_root_cause, "What went wrong (a link to the write-up is fine)",
                  multiline=True),
            context("The report is rewritten and uploaded again in the run's thread."),
        ],
    }
