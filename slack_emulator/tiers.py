"""Slack's limits: each Web API method answers 429 with ``Retry-After`` beyond its tier's rate.

Slack limits calls per method per app per workspace, at the method's tier (Tier 1: 1+ a minute,
Tier 2: 20+, Tier 3: 50+, Tier 4: 100+, with bursts), and ``chat.postMessage`` at about one a
second per channel with short bursts. Each bucket here refills at the tier's rate and holds its
burst; a call finding it empty is answered 429 with the whole seconds until a call would fit.

Every call checked while the mode is on is recorded (``LimitedCall``): whether it was answered
429, when, and its ``Retry-After``, so that a test can find the calls that came back too early
(``early_returns``). Sources: Slack's "Rate limits" page and each method's reference ("Facts").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

JSON = dict[str, Any]


@dataclass(frozen=True)
class Tier:
    per_minute: float
    burst: int


TIER_1 = Tier(per_minute=1, burst=2)
TIER_2 = Tier(per_minute=20, burst=5)
TIER_3 = Tier(per_minute=50, burst=10)
TIER_4 = Tier(per_minute=100, burst=20)
POST_PER_CHANNEL = Tier(per_minute=60, burst=3)  # "1 per second, short bursts >1 allowed"

PER_CHANNEL = frozenset({"chat.postMessage"})
TIERS: Mapping[str, Tier] = {
    "chat.postMessage": POST_PER_CHANNEL,
    "chat.update": TIER_3,
    "chat.delete": TIER_3,
    "chat.postEphemeral": TIER_4,
    "chat.getPermalink": TIER_4,
    "views.open": TIER_4,
    "views.push": TIER_4,
    "views.update": TIER_4,
    "views.publish": TIER_4,
    "files.getUploadURLExternal": TIER_4,
    "files.completeUploadExternal": TIER_4,
    "usergroups.users.list": TIER_2,
    "users.info": TIER_4,
    "conversations.info": TIER_3,
    "auth.test": TIER_4,
    "apps.connections.open": TIER_1,
}
DEFAULT_TIER = TIER_2


@dataclass
class LimitedCall:
    """One call as the limits saw it: its bucket, when it came, and whether it was refused."""

    method: str
    key: str  # "chat.update", or "chat.postMessage C0INCIDENTS"
    at: float  # the workspace clock when it came
    limited: bool
    retry_after: int | None = None

    def to_json(self) -> JSON:
        return asdict(self)


@dataclass
class _Bucket:
    tier: Tier
    tokens: float
    at: float


@dataclass
class SlackLimits:
    """The buckets of one workspace, and the record of every call they saw."""

    overrides: Mapping[str, float] = field(default_factory=dict)  # method -> calls a minute
    calls: list[LimitedCall] = field(default_factory=list)
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def tier(self, method: str) -> Tier:
        tier = TIERS.get(method, DEFAULT_TIER)
        if method in self.overrides:
            return Tier(per_minute=self.overrides[method], burst=tier.burst)
        return tier

    @staticmethod
    def key(method: str, params: JSON) -> str:
        if method in PER_CHANNEL:
            return f"{method} {params.get('channel', '')}"
        return method

    def check(self, method: str, params: JSON, now: float) -> int | None:
        """None when the call fits its bucket (and takes from it), else its ``Retry-After``."""
        key = self.key(method, params)
        tier = self.tier(method)
        rate = tier.per_minute / 60.0
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(tier, float(tier.burst), now)
        bucket.tokens = min(float(tier.burst), bucket.tokens + (now - bucket.at) * rate)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            self.calls.append(LimitedCall(method, key, now, limited=False))
            return None
        retry_after = max(1, math.ceil((1.0 - bucket.tokens) / rate))
        self.calls.append(LimitedCall(method, key, now, limited=True, retry_after=retry_after))
        return retry_after

    def limited(self) -> list[LimitedCall]:
        return [c for c in self.calls if c.limited]

    def early_returns(self) -> list[tuple[LimitedCall, LimitedCall]]:
        """Each 429 whose bucket's next call came before its ``Retry-After``, with that call."""
        early: list[tuple[LimitedCall, LimitedCall]] = []
        for i, refused in enumerate(self.calls):
            if not refused.limited or refused.retry_after is None:
                continue
            following = next((c for c in self.calls[i + 1:] if c.key == refused.key), None)
            if following is not None and following.at - refused.at < refused.retry_after:
                early.append((refused, following))
        return early
