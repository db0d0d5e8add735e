"""The Slack front, split by what a person sees; ``SlackFront`` puts the parts together.

- ``commands``: `/rollback …` and @rollbot: answers, the decision-matrix form;
- ``cards``: the pre-flight card and its clicks (two people, the restore modal);
- ``run``: the live message, cancel, Resume / Put back, the notice and its ETA;
- ``after_run``: verification announcements, the report and its form, the checklist;
- ``shortcut``: the message shortcut "Roll back this deploy" (a card from CI's deploy message);
- ``home``: the App Home tab (the dashboard per person) and its buttons and modals;
- ``common``: refusals and their audit, replies, work after the acknowledgement.

Each part asks the engine's services (``Rollbot``, ``ApprovalService``, ``FollowUp``) and renders
what they answer; none opens a store or holds rollback logic.
"""

from __future__ import annotations

from slack_sdk.web.async_client import AsyncWebClient

from bot.approvals import ApprovalService, Pending
from bot.config import SlackConfig
from bot.dashboard import DashboardRefresher
from bot.model import RunRecord, VerificationResult
from bot.post_rollback.follow_up import FollowUp
from bot.recovery.runs import Recoveries
from bot.release_before import ReleaseFinder
from bot.service import Rollbot
from handlers.access import Access
from handlers.front.after_run import AfterRunFront
from handlers.front.cards import CardFront
from handlers.front.commands import CommandFront
from handlers.front.common import FrontKit, Reply
from handlers.front.home import HomeFront
from handlers.front.run import RunFront
from handlers.front.shortcut import ShortcutFront

__all__ = ["Reply", "SlackFront"]


class SlackFront:
    """The parts of the Slack front, wired to each other and to the engine's services."""

    def __init__(self, *, rollbot: Rollbot, client: AsyncWebClient, config: SlackConfig,
                 access: Access, approvals: ApprovalService, follow_up: FollowUp,
                 recoveries: Recoveries, home: DashboardRefresher,
                 min_update_interval_s: float = 1.0) -> None:
        self.kit = FrontKit(rollbot=rollbot, client=client, config=config, access=access)
        self.after_run = AfterRunFront(kit=self.kit, approvals=approvals, follow_up=follow_up)
        self.run = RunFront(kit=self.kit, approvals=approvals, follow_up=follow_up,
                            recoveries=recoveries,
                            after_run=self.after_run,
                            min_update_interval_s=min_update_interval_s)
        self.cards = CardFront(kit=self.kit, approvals=approvals, run=self.run,
                               recoveries=recoveries)
        self.commands = CommandFront(kit=self.kit, approvals=approvals, follow_up=follow_up,
                                     cards=self.cards, run=self.run)
        self.shortcut = ShortcutFront(kit=self.kit, access=access, cards=self.cards,
                                      finder=ReleaseFinder(rollbot))
        self.home = HomeFront(kit=self.kit, cards=self.cards, access=access, home=home)

    async def announce_verification(self, result: VerificationResult, run: RunRecord,
                                    check_id: int) -> None:
        """The verifier's announcer: the result in the run's thread and in #incidents."""
        await self.after_run.announce_verification(result, run, check_id)

    async def user_refusal(self, user: str, doing: str) -> str:
        return await self.kit.user_refusal(user, doing)

    async def run_pending(self, pending: Pending, *, confirmed_by: tuple[str, ...]
                          ) -> int | None:
        """Run a confirmed pending rollback with its live message; returns the run id."""
        return await self.run.run_pending(pending, confirmed_by=confirmed_by)

    async def wait_idle(self, timeout_s: float) -> None:
        """Let running rollbacks finish (used at shutdown and by tests)."""
        await self.kit.wait_idle(timeout_s)
