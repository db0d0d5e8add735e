"""Message metadata (``metadata`` on chat.postMessage / chat.update) checked as Slack checks it.

Slack takes ``{"event_type": str, "event_payload": {...}}``. A value that is not a JSON object
is ``invalid_metadata_format``; an object of the wrong shape (no ``event_type`` string, an
``event_type`` with punctuation other than ``_`` and ``-``, no ``event_payload`` object, a
payload value that is not a string, number, boolean, or an object/array of those) is
``invalid_metadata_schema``. An empty object means "no metadata": on chat.update it removes the
message's metadata, and leaving ``metadata`` out keeps what the message had (Slack's documented
behaviour, which is what keeps a notice's metadata through its later edits).
"""

from __future__ import annotations

import re
from typing import Any

from slack_emulator.state import JSON

EVENT_TYPE = re.compile(r"^[A-Za-z0-9_-]{1,50}$")  # letters, digits, "_" and "-"; 50 at most
_ALLOWED_KEYS = frozenset({"event_type", "event_payload"})
_SCALARS = (str, int, float, bool)


class MetadataRefused(Exception):
    """Slack's error name for a metadata argument it refuses, and the reasons."""

    def __init__(self, error: str, messages: list[str]) -> None:
        super().__init__(error)
        self.error = error
        self.messages = messages


def checked_metadata(raw: Any) -> JSON | None:
    """The metadata to store (None for ``{}``), or ``MetadataRefused`` with Slack's error."""
    if not isinstance(raw, dict):
        raise MetadataRefused(
            "invalid_metadata_format",
            ["[ERROR] metadata must be a JSON object [json-pointer:/metadata]"],
        )
    if not raw:
        return None
    problems = [
        f"[ERROR] unknown field '{key}' [json-pointer:/metadata/{key}]"
        for key in sorted(set(raw) - _ALLOWED_KEYS)
    ]
    event_type = raw.get("event_type")
    if not isinstance(event_type, str) or not EVENT_TYPE.match(event_type):
        problems.append(
            "[ERROR] event_type must be a string of letters, digits, '_' and '-' "
            "[json-pointer:/metadata/event_type]"
        )
    payload = raw.get("event_payload")
    if not isinstance(payload, dict):
        problems.append(
            "[ERROR] event_payload must be an object [json-pointer:/metadata/event_payload]"
        )
    else:
        problems.extend(_payload_problems(payload))
    if problems:
        raise MetadataRefused("invalid_metadata_schema", problems)
    return raw


def _payload_problems(payload: JSON) -> list[str]:
    out: list[str] = []
    for key, value in payload.items():
        path = f"/metadata/event_payload/{key}"
        if isinstance(value, _SCALARS):
            continue
        inner: list[Any] = list(value.values()) if isinstance(value, dict) else (
            [v for item in value for v in (item.values() if isinstance(item, dict) else [item])]
            if isinstance(value, list) else [value])
        if not isinstance(value, dict | list) or not all(isinstance(v, _SCALARS) for v in inner):
            out.append(f"[ERROR] must be a string, number, boolean, or an object or array of "
                       f"those [json-pointer:{path}]")
    return out
