"""Typed metadata carried in button values and modal private_metadata (pydantic, the boundary)."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.errors import InvalidInput
from bot.model import ProcedureName


class _Meta(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def dump(self) -> str:
        return self.model_dump_json(exclude_none=True)


class CardRef(_Meta):
    """Points a button or modal at a pending rollback (a card)."""

    card: str = Field(pattern=r"^[a-z0-9]{8,32}$")


class RunRef(_Meta):
    run: int = Field(gt=0)


class RecoveryRef(_Meta):
    """A run cancelled with production down (Resume / Put back / roll back again)."""

    run: int = Field(gt=0)


class NoticeRef(_Meta):
    """The stakeholder notice a Set ETA modal will update."""

    run: int = Field(gt=0)
    channel: str = Field(pattern=r"^[CGD][A-Z0-9]{2,20}$")
    ts: str = Field(pattern=r"^[0-9]{1,12}\.[0-9]{1,8}$")


class CheckRef(_Meta):
    """A verification check of a run (for "run again" and the Healthy/Regressed answers)."""

    run: int = Field(gt=0)
    check: int = Field(ge=0)  # 0: an on-demand check outside the schedule
    tier: str = Field(pattern=r"^(immediate|extended|comprehensive)$")


class ChecklistRef(_Meta):
    run: int = Field(gt=0)
    item: str = Field(pattern=r"^[a-z0-9_]{1,32}$")


class DeployRef(_Meta):
    deploy: int = Field(gt=0)


class QuarantineRef(_Meta):
    """A quarantined version, on the home tab's Unquarantine button and its reason modal."""

    environment: str = Field(min_length=1, max_length=64)
    version: str = Field(min_length=1, max_length=64)


class AssessCardRef(_Meta):
    """The open-card button's value: which pre-flight card to open, where."""

    procedure: ProcedureName
    environment: str = Field(min_length=1, max_length=64)


class NextStep(_Meta):
    """A follow-up offered after a failed run or a failed CI deploy: open a new card."""

    run: int | None = Field(default=None, gt=0)      # the failed run it follows, or
    deploy: int | None = Field(default=None, gt=0)   # the CI deploy that failed
    environment: str = Field(max_length=64)
    version: str = Field(max_length=64)

    @property
    def reason(self) -> str:
        """The card's reason: what this follow-up follows (it becomes the quarantine reason)."""
        if self.deploy is not None:
            return f"CI deploy #{self.deploy} failed; rolling back to {self.version}"
        return f"follow-up after failed run #{self.run}" if self.run else "follow-up"


M = TypeVar("M", bound=_Meta)


def load(model: type[M], raw: str | None) -> M:
    """Parse metadata from Slack; anything forged or stale is refused."""
    try:
        return model.model_validate_json(raw or "")
    except ValidationError:
        raise InvalidInput("This button or form carries data rollbot did not write; "
                           "ignored.") from None
