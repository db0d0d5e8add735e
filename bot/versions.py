"""Release versions: the only shape of version rollbot will ever put into a command."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import total_ordering

from bot.errors import InvalidInput

# v1.2.2, optionally with a pre-release such as v1.3.0-rc.1. Anchored, ASCII only, bounded length,
# so the value is also a valid Docker tag and can never carry shell syntax.
_VERSION = re.compile(
    r"v(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})"
    r"(?:-([0-9A-Za-z]{1,20}(?:\.[0-9A-Za-z]{1,20}){0,4}))?"
)


@total_ordering
@dataclass(frozen=True)
class Version:
    """A validated release version such as ``v1.2.2``."""

    major: int
    minor: int
    patch: int
    prerelease: str = ""

    def __str__(self) -> str:
        base = f"v{self.major}.{self.minor}.{self.patch}"
        return f"{base}-{self.prerelease}" if self.prerelease else base

    def _key(self) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]:
        # Semver precedence: a pre-release sorts before its release; numeric parts numerically.
        parts: tuple[tuple[int, int | str], ...] = tuple(
            (0, int(p)) if p.isdigit() else (1, p) for p in self.prerelease.split(".") if p
        )
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, parts)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() < other._key()


def parse_version(text: str) -> Version:
    """Parse a version typed by a person; refuse anything that is not exactly ``vX.Y.Z[-pre]``."""
    match = _VERSION.fullmatch(text)
    if match is None:
        shown = text if len(text) <= 40 else text[:40] + "…"
        raise InvalidInput(
            f"'{shown}' is not a release version. Use the form v1.2.2 "
            "(a 'v', then three numbers separated by dots)."
        )
    major, minor, patch, pre = match.groups()
    return Version(int(major), int(minor), int(patch), pre or "")


def try_parse_version(text: str) -> Version | None:
    """Parse a tag found on a host; None when it is not a release version (e.g. ``latest``)."""
    try:
        return parse_version(text)
    except InvalidInput:
        return None


def reported_version(body: str, json_key: str = "version") -> str:
    """The version string a /version endpoint reports: JSON ``{json_key: …}`` or plain text."""
    text = body.strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text.splitlines()[0].strip() if text else ""
    if isinstance(data, dict):
        value = data.get(json_key)
        return "" if value is None or isinstance(value, dict | list) else str(value).strip()
    return "" if isinstance(data, dict | list) or data is None else str(data).strip()


def _release_part(reported: str) -> str:
    # "v1.2.2+build.7 (abc1234)" -> "1.2.2": a trailing commit, build metadata (semver: it does
    # not count in precedence) and the leading "v" are how endpoints decorate the same release.
    first = reported.strip().split(maxsplit=1)[0] if reported.strip() else ""
    release = first.split("+", 1)[0]
    return release[1:] if release[:1] in ("v", "V") else release


def same_release(reported: str, tag: str) -> bool:
    """Whether a version an endpoint reports is the release ``tag`` names (the one comparison)."""
    seen = _release_part(reported)
    return bool(seen) and seen == _release_part(tag)
