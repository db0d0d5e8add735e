"""After the run: verification results and status lines, the checklist, the report's form."""

from __future__ import annotations

from typing import Any

from bot.model import VerificationResult
from bot.post_rollback.checklist import ITEMS as CHECKLIST
from bot.post_rollback.checklist import Tick
from handlers.blocks.kit import (
    SECTION_LIMIT,
    TIER_TEXT,
    Blocks,
    actions,
    button,
    clip,
    context,
    esc,
    header,
    mention,
    section,
)
from handlers.ids import Action, Block, Field, View
from handlers.metadata import ChecklistRef, CheckRef, NextStep, RunRef


def verification_thread(result: VerificationResult) -> str:
    """The full result, for the run's thread: what was checked, each result, timings."""
    late = f", {result.late_s:.0f} s late (rollbot was down)" if result.late_s >= 60 else ""
    head = (f"{'✅' if result.ok else '❌'} *{TIER_TEXT[result.tier.value]} verification* "
            f"(due {result.due_at:%H:%M:%S} UTC, ran {result.ran_at:%H:%M:%S}{late})")
    lines = [f"{'✅' if i.ok else '❌'} *{esc(i.name)}* ({i.duration_s:.1f} s): "
             f"{esc(clip(i.detail, 300))}" for i in result.items]
    return clip(head + "\n" + "\n".join(lines), SECTION_LIMIT)


def verification_status(result: VerificationResult, *, run_id: int, environment: str,
                        version: str, requested_by: str, oncall: tuple[str, ...],
                        check_id: int) -> Blocks:
    """The one-line status in the incidents channel, with what a person can do next."""
    tier = TIER_TEXT[result.tier.value]
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
