"""The call log and the fault modes (rate limits, Slack's limits, outages, one-off errors)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from slack_emulator.tiers import SlackLimits

JSON = dict[str, Any]

# Methods the automatic limiter watches: Slack allows about one message a second per channel.
AUTO_LIMITED = ("chat.postMessage", "chat.update")
# What Faults also checks that is no Web API method, so has no tier.
NOT_WEB_API = ("file_upload", "response_url")


@dataclass
class CallRecord:
    """One call the emulator answered: Web API method, ``response_url`` or file upload."""

    method: str
    params: JSON  # parsed, JSON fields decoded, token removed
    status: int
    response: JSON
    at: float  # time.monotonic() when answered
    headers: dict[str, str] = field(default_factory=dict)  # notable response headers

    @property
    def ok(self) -> bool:
        return bool(self.response.get("ok"))

    @property
    def error(self) -> str | None:
        err = self.response.get("error")
        return err if isinstance(err, str) else None

    def to_json(self) -> JSON:
        return asdict(self)


@dataclass
class RateLimitRule:
    method: str | None  # None: every method
    retry_after: int
    remaining: int | None  # None: until switched off


@dataclass
class MethodFault:
    method: str
    error: str
    remaining: int | None


@dataclass
class Answer:
    """A canned answer that replaces the method's normal one."""

    status: int
    body: JSON
    headers: dict[str, str] = field(default_factory=dict)


class Faults:
    """What goes wrong, checked before every call, in order: outage, rate limits, errors."""

    def __init__(self) -> None:
        self.outage: tuple[int, str] | None = None
        self.rate_rules: list[RateLimitRule] = []
        self.method_faults: list[MethodFault] = []
        self.auto_interval: float | None = None
        self.slack_limits: SlackLimits | None = None  # Slack's limits mode (slack_emulator.tiers)
        self._last_accepted: dict[tuple[str, str], float] = {}

    def clear(self) -> None:
        self.outage = None
        self.rate_rules.clear()
        self.method_faults.clear()
        self.auto_interval = None
        self.slack_limits = None
        self._last_accepted.clear()

    def check(self, method: str, params: JSON, now: float) -> Answer | None:
        if self.outage is not None:
            status, error = self.outage
            return Answer(status, {"ok": False, "error": error})
        for rule in self.rate_rules:
            if rule.method is None or rule.method == method:
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        self.rate_rules.remove(rule)
                return _ratelimited(rule.retry_after)
        limited = self._auto(method, params, now)
        if limited is not None:
            return limited
        if self.slack_limits is not None and method not in NOT_WEB_API:
            retry_after = self.slack_limits.check(method, params, now)
            if retry_after is not None:
                return _ratelimited(retry_after)
        for fault in self.method_faults:
            if fault.method == method:
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self.method_faults.remove(fault)
                return Answer(200, {"ok": False, "error": fault.error})
        return None

    def _auto(self, method: str, params: JSON, now: float) -> Answer | None:
        if self.auto_interval is None or method not in AUTO_LIMITED:
            return None
        key = (method, str(params.get("channel", "")))
        last = self._last_accepted.get(key)
        if last is not None and now - last < self.auto_interval:
            return _ratelimited(max(1, math.ceil(self.auto_interval - (now - last))))
        self._last_accepted[key] = now
        return None


def _ratelimited(retry_after: int) -> Answer:
    return Answer(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(retry_after)})
