"""Block Kit builders: pure functions from domain values to Slack messages and views.

One module per thing a person sees: ``cards`` (the pre-flight card, the restore modal, command
replies), ``run`` (the live message, its recovery buttons, the notice), ``after_run`` (checks,
checklist, report form), ``fleet`` (a fleet's host lines, checks per host, rollout order),
``message_events`` (the message metadata on the notices and verification lines).
``kit`` holds the primitives they are made of, re-exported here.
"""

from handlers.blocks.kit import (
    Blocks,
    actions,
    button,
    clip,
    confirm_dialog,
    context,
    esc,
    header,
    help_message,
    mention,
    refusal,
    section,
    sections_text,
)

__all__ = ["Blocks", "actions", "button", "clip", "confirm_dialog", "context", "esc", "header",
           "help_message", "mention", "refusal", "section", "sections_text"]
