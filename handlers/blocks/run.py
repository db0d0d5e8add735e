"""The live message of a run, its recovery buttons, and the stakeholder notice with its ETA."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bot.events import StepInfo
from bot.fleet_view import HostBoard, name_list, who_runs_what
from bot.model import ProcedureName, RunOutcome, RunRecord, RunStatus, StepStatus
from bot.procedures.catalog import TITLES
from bot.recovery.offers import left_down, put_back_refusal
from handlers.blocks.fleet import (
    failures_section,
    hosts_section,
    shared_steps_section,
    versions_section,
)
from handlers.blocks.kit import (
    RUN_ICON,
    STEP_ICON,
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
from handlers.metadata import NextStep, NoticeRef, RecoveryRef, RunRef


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
    # A fleet: where each host is (empty for one host, which shows its steps as always).
    board: HostBoard = field(default_factory=HostBoard)


def live_message(s: LiveState, *, now: datetime) -> Blocks:
    o = s.outcome
    if o is None:
        head = f"⏳ Rolling back {s.environment}: {s.from_version} → {s.to_version}"
    elif o.status is RunStatus.SUCCEEDED:
        head = f"✅ Rolled back {s.environment} to {s.to_version}"
        if s.board.is_fleet:
            head += f" on all {len(s.board.hosts)} hosts"
    else:
        head = f"{RUN_ICON.get(o.status, '❌')} Rollback {o.status.value.replace('_', ' ')}: " \
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
    blocks: Blocks = [header(head), section("\n".join(info))]
    if s.board.is_fleet:
        blocks += _fleet_progress(s, now=now)
    else:
        blocks += _one_host_progress(s, now=now)
    if o is not None:
        blocks.append(section(esc(clip(o.message, 2900))))
        if o.hosts:
            blocks += versions_section(o.hosts)
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


def _one_host_progress(s: LiveState, *, now: datetime) -> Blocks:
    """Each step on its line, then what failed and the state the host is left in."""
    lines = []
    for step in s.steps:
        st = s.status.get(step.index, StepStatus.PENDING)
        if st is StepStatus.RUNNING and step.index in s.began:
            took = f" ({(now - s.began[step.index]).total_seconds():.0f} s…)"
        elif step.index in s.took:
            took = f" ({s.took[step.index]:.1f} s)"
        else:
            took = ""
        lines.append(f"{STEP_ICON[st]} {step.index + 1}. {esc(step.title)}{took}")
    blocks: Blocks = [section("*Steps*\n" + "\n".join(lines))]
    if s.failure:
        text = f"*What failed:* {esc(s.failure)}"
        if s.failure_tail:
            tail = clip(s.failure_tail, 1800).replace("```", "'''")
            text += f"\n```{tail}```"
        blocks.append(section(text))
    if s.host_state:
        blocks.append(section(f"*Host state:* {esc(s.host_state)}"))
    return blocks


def _fleet_progress(s: LiveState, *, now: datetime) -> Blocks:
    """One line per host, the environment's own steps, then what failed host by host."""
    shared = [step for step in s.steps if not step.host]
    return [*hosts_section(s.board.lines(now=now)), *shared_steps_section(shared, s.status),
            *failures_section(s.board.failures)]


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
    return recovery_blocks(run_id=o.run_id, host_state=o.host_state, old=old, target=target,
                           done=done)


def recovery_blocks(*, run_id: int, host_state: str, old: str, target: str,
                    done: set[str]) -> Blocks:
    """The DOWN sentence and the Resume / Put back buttons of a run that left production down."""
    why_not = put_back_refusal(done, run_id=run_id, from_version=old)
    ref = RecoveryRef(run=run_id).dump()
    lines = [f"🔴 *Production is DOWN.* The host is left: {esc(host_state)}.",
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


def interrupted_message(run: RunRecord, *, down: bool) -> Blocks:
    """A run's live message once its rollbot process died: interrupted, and the state it left."""
    versions = f"{run.from_version or '?'} → {run.to_version or '?'}"
    head = (f"🔴 Rollback interrupted: {run.environment} is DOWN" if down else
            f"⚠️ Rollback interrupted: {run.environment} {versions}")
    info = [f"*Procedure:* {TITLES[run.procedure].title} ({versions})",
            f"*Requested by:* {mention(run.requested_by)}",
            f"*Reason:* {esc(run.reason) if run.reason else '_none given_'}"]
    lines = []
    for i, step in enumerate(run.steps):
        where = f" on {esc(step.host)}" if step.host else ""
        if step.status is StepStatus.RUNNING:
            lines.append(f"⚠️ {i + 1}. {esc(step.title)}{where}: was running when rollbot died")
        else:
            lines.append(f"{STEP_ICON[step.status]} {i + 1}. {esc(step.title)}{where}")
    blocks: Blocks = [header(head), section("\n".join(info))]
    if lines:
        blocks.append(section("*Steps*\n" + "\n".join(lines)))
    blocks += [section(f"⚠️ *The rollbot process running this rollback died*, so the run was "
                       f"interrupted. {esc(clip(run.message, 2500))}"),
               section(f"*Host state (last recorded):* {esc(run.host_state)}")]
    ended = f" · interrupted {run.finished_at:%H:%M:%S} UTC" if run.finished_at else ""
    return [*blocks, context(f"Run #{run.id} · started {run.created_at:%H:%M:%S} UTC{ended} · "
                             "check the host before trusting its state")]


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
    icon = STEP_ICON[done] if done else "⏳"
    body = "\n".join(lines)[-2500:].replace("```", "'''")
    return f"{icon} *{index + 1}. {esc(title)}*\n```{body or ' '}```"


def notice_success(*, version: str, eta: str, run_id: int, eta_set_by: str | None = None,
                   hosts: tuple[str, ...] = ()) -> Blocks:
    """The spec's stakeholder message, with a Set ETA button; a fleet's hosts named under it."""
    text = (f"Rollback completed. Service restored to {version}. Investigating root cause. "
            f"ETA for fix: {esc(eta)}")
    blocks: Blocks = [section(text)]
    if hosts:
        blocks.append(context(f"All {len(hosts)} hosts run {esc(version)}: "
                              f"{esc(name_list(hosts))}"))
    if eta_set_by:
        blocks.append(context(f"ETA set by {mention(eta_set_by)}"))
    blocks.append(actions(Block.NOTICE_ACTIONS, button("Set ETA", Action.SET_ETA,
                                                       RunRef(run=run_id).dump())))
    return blocks


def notice_failure(o: RunOutcome, *, environment: str) -> Blocks:
    """What failed, the host's state, and the next recommended actions as buttons."""
    icon = RUN_ICON.get(o.status, "❌")
    text = (f"{icon} *Rollback #{o.run_id} did not complete* ({o.status.value.replace('_', ' ')})"
            f"\n{esc(clip(o.message, 1500))}\n*Host state:* {esc(clip(o.host_state, 600))}")
    if o.hosts:
        text += f"\n*Who runs what:* {esc(clip(who_runs_what(o.hosts), 800))}"
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

