"""A run whose rollbot process died, in Slack: its live message says so, with the offers."""

from __future__ import annotations

import logging

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.approvals import ApprovalService
from bot.model import RunRecord
from bot.recovery.offers import RecoveryOffer
from handlers.blocks.run import interrupted_message, recovery_blocks

log = logging.getLogger(__name__)


class SlackInterruptions:
    """Edits the live message of a run found dead (the reaper's notifier in Slack)."""

    def __init__(self, *, client: AsyncWebClient, approvals: ApprovalService) -> None:
        self._client = client
        self._approvals = approvals

    async def interrupted(self, run: RunRecord, offer: RecoveryOffer | None) -> None:
        blocks = interrupted_message(run, down=offer is not None)
        if offer is not None:
            blocks[-1:-1] = recovery_blocks(run_id=run.id, host_state=offer.host_state,
                                            old=offer.from_version, target=offer.to_version,
                                            done=set(offer.done_steps))
        ref = await self._approvals.front_ref_for_run(run.id)
        if not ref or "ts" not in ref:
            # Started from the terminal (or a front that kept no message): the log says it.
            log.warning("run #%s in %s was interrupted: %s", run.id, run.environment,
                        run.message)
            return
        try:
            await self._client.chat_update(channel=ref["channel"], ts=ref["ts"], blocks=blocks,
                                           text=str(blocks[0]["text"]["text"]))
        except SlackApiError as exc:
            log.error("could not show that run #%s was interrupted: %s", run.id, exc)
