"""The App Home tab and its modals: pure Block Kit from the engine's ``Dashboard``.

The tab holds at most 100 blocks (Slack's limit for a home view). Environments that need eyes
(a rollback, a watch, a countdown) come first and are shown whole; when the rest do not fit,
they are summarised one line each, and those that do not fit even so are named as left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from bot.autorollback.deploys import DeployState
from bot.dashboard import Dashboard, EnvironmentState, RunSummary, WatchedDeploy
from bot.errors import InvalidInput
from bot.model import ProcedureName
from bot.versions import Version, parse_version
from handlers.blocks.kit import (
    RUN_ICON,
    TIER_TEXT,
    Blocks,
    clip,
    context,
    esc,
    header,
    mention,
    section,
)
from handlers.ids import Action, HomeAction, HomeBlock, HomeField, HomeView, numbered
from handlers.metadata import DeployRef, QuarantineRef

MAX_HOME_BLOCKS = 100
QUARANTINE_BUTTONS = 5   # per environment; more are listed in one line
CHECK_LINES = 8
SUMMARY_CHARS = 2900     # a section's text is at most 3000 characters
PLANNABLE = (ProcedureName.SIMPLE, ProcedureName.MIGRATIONS, ProcedureName.RESTORE,
             ProcedureName.EMERGENCY)
_PROCEDURE_TEXT = {
    ProcedureName.SIMPLE: "Code only (simple)",
    ProcedureName.MIGRATIONS: "Code and migrations",
    ProcedureName.RESTORE: "Restore the database",
    ProcedureName.EMERGENCY: "Emergency (stop, redeploy)",
}


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text}


def _home_button(text: str, action: StrEnum, value: str, *, style: str | None = None,
                 numbers: tuple[int, ...] = ()) -> dict[str, Any]:
    b: dict[str, Any] = {"type": "button", "action_id": numbered(action, *numbers),
                         "text": _plain(clip(text, 75)), "value": value}
    if style:
        b["style"] = style
    return b


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%b %d %H:%M UTC")


def _link(url: str | None, label: str) -> str:
    return f" · <{url}|{label}>" if url else ""


def _run_line(run: RunSummary) -> str:
    icon = RUN_ICON.get(run.status, "•")
    move = f"{esc(run.from_version or '?')} → {esc(run.to_version or '?')}"
    return (f"{icon} #{run.id} {move} `{run.procedure.value}` {run.status.value} by "
            f"{mention(run.requested_by)}, {_when(run.created_at)}"
            f"{_link(run.live_message_url, 'live message')}")


def _now_and_lock(env: EnvironmentState) -> str:
    running = env.running
    now = (f"*Runs now:* `{esc(running.version)}` ({running.source} {_when(running.seen_at)})"
           if running else "*Runs now:* not seen yet (no pre-flight or run so far)")
    lock = env.active_run
    held = (f"*Lock:* 🔒 rollback #{lock.id} {lock.status.value} "
            f"({esc(lock.from_version or '?')} → {esc(lock.to_version or '?')}) by "
            f"{mention(lock.requested_by)} since {_when(lock.created_at)}"
            f"{_link(lock.live_message_url, 'live message')}"
            if lock else "*Lock:* 🔓 free, no rollback running")
    return f"{now}\n{held}"


def _deploy_text(d: WatchedDeploy) -> str:
    what = f"`{esc(d.version)}` (before it: `{esc(d.previous_version)}`)"
    if d.state is DeployState.COUNTDOWN:
        due = f", at {_when(d.deadline)}" if d.deadline else ""
        return f"⏳ *Countdown:* {what} is failing; rolls back to the previous version{due}"
    if d.state is DeployState.OFFERED:
        return f"⚠️ *Offered:* CI reported {what} failed; a person decides"
    if d.state is DeployState.ROLLING_BACK:
        return f"⏪ *Rolling back:* {what}"
    return f"👀 *Watching:* {what} since its deploy"


def _deploy_buttons(d: WatchedDeploy) -> list[dict[str, Any]]:
    """The same buttons as the deploy's Slack message, taken by the same handlers."""
    ref, n = DeployRef(deploy=d.id).dump(), (d.id,)
    if d.state is DeployState.COUNTDOWN:
        return [_home_button("Roll back now", Action.AUTO_ROLL_BACK_NOW, ref, style="danger",
                             numbers=n),
                _home_button("Cancel", Action.AUTO_CANCEL, ref, numbers=n)]
    if d.state is DeployState.OFFERED:
        return [_home_button(f"Roll back to {d.previous_version} now",
                             Action.AUTO_ROLL_BACK_NOW, ref, style="danger", numbers=n),
                _home_button("Dismiss", Action.AUTO_CANCEL, ref, numbers=n)]
    if d.state is DeployState.WATCHING:
        return [_home_button(f"Roll back to {d.previous_version} now",
                             Action.AUTO_ROLL_BACK_NOW, ref, numbers=n),
                _home_button("Cancel", Action.AUTO_CANCEL, ref, numbers=n)]
    return []


def environment_blocks(env: EnvironmentState, *, index: int, may_act: bool,
                       default: bool = False) -> Blocks:
    """One environment, whole: what runs, the lock, the watch, quarantine, checks, last runs."""
    blocks: Blocks = [header(f"{env.name}{' (default)' if default else ''}"),
                      section(_now_and_lock(env))]
    if not env.deploys:
        blocks.append(section("*Automatic watch:* no deploy being watched"))
    for d in env.deploys:
        buttons = _deploy_buttons(d) if may_act else []
        blocks.append(section(_deploy_text(d)))
        if buttons:
            blocks.append({"type": "actions", "block_id": f"{HomeBlock.WATCH.value}.{d.id}",
                           "elements": buttons})
    if not env.quarantined:
        blocks.append(section("*Quarantined versions:* none"))
    else:
        blocks.append(section(f"*Quarantined versions:* {len(env.quarantined)}"))
    for n, q in enumerate(env.quarantined[:QUARANTINE_BUTTONS]):
        block = section(f"`{esc(q.version)}` by {mention(q.by)}, {_when(q.at)}: "
                        f"{esc(clip(q.reason, 300))}",
                        block_id=f"{HomeBlock.QUARANTINED.value}.{index}.{n}")
        if may_act:
            block["accessory"] = _home_button(
                "Unquarantine", HomeAction.UNQUARANTINE,
                QuarantineRef(environment=env.name, version=q.version).dump(), numbers=(index, n))
        blocks.append(block)
    if len(env.quarantined) > QUARANTINE_BUTTONS:
        more = ", ".join(f"`{esc(q.version)}`" for q in env.quarantined[QUARANTINE_BUTTONS:])
        blocks.append(context(clip(f"Also quarantined: {more}", 2000)))
    checks = [f"• {TIER_TEXT.get(c.tier, c.tier)} check of rollback #{c.run_id} due "
              f"{_when(c.due_at)}" for c in env.pending_checks[:CHECK_LINES]]
    if len(env.pending_checks) > CHECK_LINES:
        checks.append(f"• … and {len(env.pending_checks) - CHECK_LINES} more")
    blocks.append(section("*Pending verification checks:*\n" + "\n".join(checks)
                          if checks else "*Pending verification checks:* none"))
    runs = [_run_line(r) for r in env.last_runs]
    title = f"*Last {len(runs)} runs:*" if len(runs) > 1 else "*Last run:*"
    blocks.append(section(f"{title}\n" + "\n".join(runs)
                          if runs else "*Last runs:* none yet"))
    blocks.append({"type": "divider"})
    return blocks


def summary_line(env: EnvironmentState) -> str:
    """An environment in one line, for a tab with more than fits."""
    running = f"runs `{esc(env.running.version)}`" if env.running else "not seen yet"
    lock = f"🔒 rollback #{env.active_run.id}" if env.active_run else "🔓 free"
    extra = []
    if env.deploys:
        extra.append(f"{len(env.deploys)} deploy(s) watched")
    if env.quarantined:
        extra.append(f"{len(env.quarantined)} quarantined")
    if env.pending_checks:
        extra.append(f"{len(env.pending_checks)} check(s) pending")
    return f"*{esc(env.name)}*: {running}, {lock}" + "".join(f", {e}" for e in extra)


def home_view(dashboard: Dashboard, *, may_act: bool) -> dict[str, Any]:
    """The whole tab for one person; without ``may_act``, the same state and no buttons."""
    top: Blocks = [header("rollbot: production now")]
    who = ("You may roll back: the buttons below act." if may_act else
           "Read-only: you are not on rollbot's list of people allowed to roll back.")
    top.append(context(f"Updated {_when(dashboard.read_at)} · {who}"))
    if may_act:
        top.append({"type": "actions", "block_id": HomeBlock.BUTTONS.value, "elements": [
            _home_button("Plan a rollback", HomeAction.PLAN, "plan", style="primary"),
            _home_button("Assess", HomeAction.ASSESS, "assess")]})
    body: Blocks = []
    rest: list[EnvironmentState] = []
    for i, env in enumerate(dashboard.environments):
        blocks = environment_blocks(env, index=i, may_act=may_act,
                                    default=env.name == dashboard.default_environment)
        # Keep two blocks for the summary and the left-out note of those that follow.
        reserve = 2 if i < len(dashboard.environments) - 1 else 0
        if not rest and len(top) + len(body) + len(blocks) + reserve <= MAX_HOME_BLOCKS:
            body.extend(blocks)
        else:
            rest.append(env)
    body.extend(_summaries(rest, room=MAX_HOME_BLOCKS - len(top) - len(body)))
    return {"type": "home", "callback_id": HomeView.TAB.value, "blocks": [*top, *body]}


def _summaries(rest: list[EnvironmentState], *, room: int) -> Blocks:
    if not rest:
        return []
    sections: list[list[str]] = [[]]
    for env in rest:
        line = summary_line(env)
        if sum(len(x) + 1 for x in sections[-1]) + len(line) > SUMMARY_CHARS:
            sections.append([])
        sections[-1].append(line)
    blocks: Blocks = [header(f"{len(rest)} more environments, in short")]
    shown = 0
    for lines in sections:
        if len(blocks) + 2 > room:  # keep one for the note below
            break
        blocks.append(section("\n".join(lines)))
        shown += len(lines)
    left_out = [env.name for env in rest[shown:]]
    note = ("Shown in short so the tab stays within Slack's 100 blocks; "
            "`/rollback status --env NAME` has the whole picture.")
    if left_out:
        note = (f"Left out (no room in the tab): {', '.join(esc(n) for n in left_out)}. "
                + note)
    blocks.append(context(clip(note, 2900)))
    return blocks


# --- the modals opened from the tab ------------------------------------------------------------

def plan_modal(*, environments: list[str], default: str) -> dict[str, Any]:
    """Plan a rollback: on submit, the pre-flight card is posted in the incidents channel."""
    envs = [{"text": _plain(clip(e, 75)), "value": e} for e in environments[:100]]
    chosen = next((o for o in envs if o["value"] == default), envs[0])
    procedures = [{"text": _plain(_PROCEDURE_TEXT[p]), "value": p.value} for p in PLANNABLE]
    return {
        "type": "modal", "callback_id": HomeView.PLAN.value,
        "title": _plain("Plan a rollback"), "submit": _plain("Post the card"),
        "close": _plain("Cancel"),
        "blocks": [
            section("rollbot runs the pre-flight and posts the card in the incidents channel, "
                    "as `/rollback` would. Nothing runs until someone confirms the card."),
            {"type": "input", "block_id": HomeBlock.PLAN_ENVIRONMENT.value,
             "label": _plain("Environment"),
             "element": {"type": "static_select", "action_id": HomeField.ENVIRONMENT.value,
                         "options": envs, "initial_option": chosen}},
            {"type": "input", "block_id": HomeBlock.PLAN_VERSION.value,
             "label": _plain("Version to roll back to"),
             "hint": _plain("A release such as v1.2.2, or previous for the one before."),
             "element": {"type": "plain_text_input", "action_id": HomeField.VERSION.value,
                         "initial_value": "previous", "max_length": 64}},
            {"type": "input", "block_id": HomeBlock.PLAN_PROCEDURE.value,
             "label": _plain("Procedure"),
             "element": {"type": "static_select", "action_id": HomeField.PROCEDURE.value,
                         "options": procedures, "initial_option": procedures[0]}},
            {"type": "input", "block_id": HomeBlock.PLAN_REASON.value, "label": _plain("Reason"),
             "element": {"type": "plain_text_input", "action_id": HomeField.REASON.value,
                         "max_length": 300, "placeholder": _plain("e.g. v1.2.3 fails health")}},
        ],
    }


@dataclass(frozen=True)
class PlanForm:
    environment: str
    target: Version | None  # None: the previous version
    procedure: ProcedureName
    reason: str


def _input(values: Mapping[str, Any], block: HomeBlock, field: HomeField) -> str:
    element = values.get(block.value, {}).get(field.value, {})
    if element.get("selected_option"):
        return str(element["selected_option"].get("value") or "")
    return str(element.get("value") or "").strip()


def parse_plan_form(values: Mapping[str, Any]) -> tuple[PlanForm | None, dict[str, str]]:
    """The submitted plan modal, or the errors per block (Slack shows them under each input)."""
    errors: dict[str, str] = {}
    environment = _input(values, HomeBlock.PLAN_ENVIRONMENT, HomeField.ENVIRONMENT)
    if not environment:
        errors[HomeBlock.PLAN_ENVIRONMENT.value] = "Pick an environment."
    raw = _input(values, HomeBlock.PLAN_VERSION, HomeField.VERSION)
    target: Version | None = None
    if raw.lower() not in ("", "previous"):
        try:
            target = parse_version(raw)
        except InvalidInput as exc:
            errors[HomeBlock.PLAN_VERSION.value] = str(exc)[:150]
    try:
        procedure = ProcedureName(_input(values, HomeBlock.PLAN_PROCEDURE, HomeField.PROCEDURE))
        if procedure not in PLANNABLE:
            raise ValueError
    except ValueError:
        errors[HomeBlock.PLAN_PROCEDURE.value] = "Pick one of the procedures offered."
        procedure = ProcedureName.SIMPLE
    reason = _input(values, HomeBlock.PLAN_REASON, HomeField.REASON)
    if not reason:
        errors[HomeBlock.PLAN_REASON.value] = ("Say why (it goes on the card, the report and "
                                               "the quarantine).")
    if errors:
        return None, errors
    return PlanForm(environment=environment, target=target, procedure=procedure,
                    reason=reason), {}


def unquarantine_modal(ref: QuarantineRef) -> dict[str, Any]:
    return {
        "type": "modal", "callback_id": HomeView.UNQUARANTINE.value,
        "private_metadata": ref.dump(),
        "title": _plain("Unquarantine"), "submit": _plain("Unquarantine"),
        "close": _plain("Keep it"),
        "blocks": [
            section(f"CI may deploy `{esc(ref.version)}` to *{esc(ref.environment)}* again once "
                    "its quarantine is lifted. The reason goes in the audit log."),
            {"type": "input", "block_id": HomeBlock.UNQUARANTINE_REASON.value,
             "label": _plain("Why is it safe again?"),
             "element": {"type": "plain_text_input", "action_id": HomeField.REASON.value,
                         "max_length": 300,
                         "placeholder": _plain("e.g. fixed by the config change in INC-42")}},
        ],
    }


def typed_reason(values: Mapping[str, Any]) -> str:
    return _input(values, HomeBlock.UNQUARANTINE_REASON, HomeField.REASON)


def refused_modal(text: str) -> dict[str, Any]:
    """A refusal for a click on the home tab, which has no channel to answer in."""
    return {"type": "modal", "callback_id": HomeView.REFUSED.value,
            "title": _plain("rollbot"), "close": _plain("OK"),
            "blocks": [section(f"🚫 {esc(text)}")]}
