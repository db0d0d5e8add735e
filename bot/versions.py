"""Release versions: the only shape of version rollbot will ever put into a command."""

from __future__ import annotations

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
