"""A deploy named in free text (CI's "Deployed v1.2.3 to production"): its version and environment.

Pure: the Slack front flattens a message (text, blocks, attachments) to text and asks here. A
version is ``v1.2.3`` (``1.2.3`` counts only when no ``v``-version is named, so a date or an IP
address is not taken for one); build metadata (``+build.7``) is not part of the release. A version
the message marks as the one replaced ("was v1.2.2", "previous: v1.2.2", "v1.2.2 → v1.2.3",
"v1.2.2...v1.2.3") is not the deploy. The environment is a runbook environment's name as a whole
word, else the default one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from bot.errors import InvalidInput
from bot.versions import Version, parse_version

_AGAIN = "Nothing was posted; use /rollback VERSION"
# Not inside a longer dotted number (10.0.0.11) or a word (abc1.2.3); "v1.2.2...v1.2.3" is a range.
_CANDIDATE = re.compile(
    r"(?<![0-9A-Za-z])(?<![0-9A-Za-z]\.)(?P<v>[vV])?"
    r"(?P<core>(?:0|[1-9][0-9]{0,5})\.(?:0|[1-9][0-9]{0,5})\.(?:0|[1-9][0-9]{0,5}))"
    r"(?:-(?P<pre>[0-9A-Za-z]{1,20}(?:\.[0-9A-Za-z]{1,20}){0,4}))?"
    r"(?:\+[0-9A-Za-z.-]{1,40})?"
    r"(?![0-9A-Za-z])(?!\.[0-9A-Za-z])"
)
# Words that say the version after them is the one replaced, not the one deployed.
_REPLACED_BEFORE = re.compile(
    r"(?:previous(?:ly)?|prev|was|were|from|replac\w*|old|rolled\s+back)"
    r"(?:\s+(?:version|release|tag))?\W{0,4}$", re.IGNORECASE)
# What stands between a replaced version and the deployed one: "→", "->", "...", "to".
_ARROW = re.compile(r"\W{0,3}(?:→|->|=>|⇒|⟶|➜|➡️?|»|\.{2,3}|to)\W{0,3}", re.IGNORECASE)


@dataclass(frozen=True)
class ReleaseMention:
    """The release a message names, and the environment it was deployed to."""

    version: Version
    environment: str
    environment_named: bool  # False: the runbook's default (the message named none)


@dataclass(frozen=True)
class _Found:
    version: Version
    start: int
    end: int
    with_v: bool


def find_release(text: str, *, environments: Iterable[str], default: str) -> ReleaseMention:
    """The one release and environment ``text`` names; InvalidInput says what is missing."""
    version = deployed_version(text)
    environment, named = _environment(text, environments=environments, default=default)
    return ReleaseMention(version=version, environment=environment, environment_named=named)


def deployed_version(text: str) -> Version:
    """The version a deploy message says was deployed (InvalidInput: none, or several)."""
    found = _versions(text)
    if any(f.with_v for f in found):
        found = [f for f in found if f.with_v]
    if not found:
        raise InvalidInput("This message names no release version (such as v1.2.3), so rollbot "
                           f"cannot tell which deploy to roll back. {_AGAIN}.")
    deployed = [f for i, f in enumerate(found) if not _replaced(text, found=found, i=i)] or found
    distinct = sorted({f.version for f in deployed})
    if len(distinct) > 1:
        names = ", ".join(str(v) for v in distinct)
        raise InvalidInput(f"This message names several release versions ({names}) and "
                           f"rollbot cannot tell which one was deployed. {_AGAIN}.")
    return distinct[0]


def _versions(text: str) -> list[_Found]:
    found = []
    for m in _CANDIDATE.finditer(text):
        pre = f"-{m['pre']}" if m["pre"] else ""
        found.append(_Found(parse_version(f"v{m['core']}{pre}"), m.start(), m.end(),
                            m["v"] is not None))
    return found


def _replaced(text: str, *, found: list[_Found], i: int) -> bool:
    """Whether the message marks version ``i`` as the one the deploy replaced."""
    here = found[i]
    if _REPLACED_BEFORE.search(text[max(0, here.start - 40):here.start]):
        return True
    later = next((f for f in found[i + 1:] if f.version != here.version), None)
    return later is not None and _ARROW.fullmatch(text[here.end:later.start]) is not None


def _environment(text: str, *, environments: Iterable[str], default: str
                 ) -> tuple[str, bool]:
    named = sorted(name for name in environments
                   if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text, re.IGNORECASE))
    if len(named) > 1:
        raise InvalidInput(f"This message names more than one environment ({', '.join(named)}); "
                           "rollbot cannot tell which one to roll back. Nothing was posted; use "
                           "/rollback VERSION --env NAME.")
    return (named[0], True) if named else (default, False)
