"""The app directory's ``.env`` as compose reads it: its values, and one value changed in place.

docker-compose 1.29 reads ``.env`` with python-dotenv (``dotenv_values``): ``KEY=value``,
``export KEY=value``, single or double quotes (a quoted value may span lines), ``#`` comments
(after an unquoted value only when a space precedes them), the last binding of a key wins. The
scanner below follows that grammar so that rollbot reads the value compose reads, and changes
only the characters of that value: comments, order, quoting and every other line stay
byte-identical.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.errors import ComposeEditError

# The pieces of python-dotenv 0.21's parser (dotenv/parser.py), in the order it reads them.
_MULTILINE_WS = re.compile(r"\s*", re.MULTILINE)
_EXPORT = re.compile(r"(?:export[^\S\r\n]+)?")
_SINGLE_QUOTED_KEY = re.compile(r"'([^']+)'")
_UNQUOTED_KEY = re.compile(r"([^=#\s]+)")
_WS = re.compile(r"[^\S\r\n]*")
_EQUAL = re.compile(r"=[^\S\r\n]*")
_SINGLE_QUOTED = re.compile(r"'((?:\\'|[^'])*)'")
_DOUBLE_QUOTED = re.compile(r'"((?:\\"|[^"])*)"')
_UNQUOTED = re.compile(r"[^\r\n]*")
_COMMENT = re.compile(r"(?:[^\S\r\n]*#[^\r\n]*)?")
_END_OF_LINE = re.compile(r"[^\S\r\n]*(?:\r\n|\n|\r|$)")
_REST_OF_LINE = re.compile(r"[^\r\n]*(?:\r|\n|\r\n)?")


@dataclass(frozen=True)
class EnvBinding:
    """One ``KEY=value`` of the file: the value as compose reads it, and where it is written."""

    key: str
    value: str | None  # None: the key is listed without "=" (dotenv: no value)
    start: int         # the value as written (quotes included): text[start:end]
    end: int
    quote: str         # "'", '"' or ""


def _value(text: str, pos: int) -> tuple[str, int, int, str]:
    """The value starting at ``pos``: (as read, start, end as written, quote)."""
    char = text[pos:pos + 1]
    if char in ("'", '"'):
        m = (_SINGLE_QUOTED if char == "'" else _DOUBLE_QUOTED).match(text, pos)
        if m is None:
            raise ValueError("unterminated quote")
        return m.group(1), pos, m.end(), char
    if char in ("", "\n", "\r"):
        return "", pos, pos, ""
    m = _UNQUOTED.match(text, pos)
    assert m is not None  # matches the empty string at worst
    value = re.sub(r"\s+#.*", "", m.group(0)).rstrip()
    return value, pos, pos + len(value), ""


def bindings(text: str) -> list[EnvBinding]:
    """Every binding of the file in order (a line compose's parser rejects is skipped, as there)."""
    found: list[EnvBinding] = []
    pos = 0
    while pos < len(text):
        pos = _MULTILINE_WS.match(text, pos).end()  # type: ignore[union-attr]
        if pos >= len(text):
            break
        line_start = pos
        try:
            pos = _EXPORT.match(text, pos).end()  # type: ignore[union-attr]
            if text[pos] == "#":
                key = None
            else:
                k = (_SINGLE_QUOTED_KEY if text[pos] == "'" else _UNQUOTED_KEY).match(text, pos)
                if k is None:
                    raise ValueError("no key")
                key, pos = k.group(1), k.end()
            pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
            value: str | None = None
            start = end = pos
            quote = ""
            if key is not None and text[pos:pos + 1] == "=":
                pos = _EQUAL.match(text, pos).end()  # type: ignore[union-attr]
                value, start, end, quote = _value(text, pos)
                pos = end
            pos = _COMMENT.match(text, pos).end()  # type: ignore[union-attr]
            eol = _END_OF_LINE.match(text, pos)
            if eol is None:
                raise ValueError("text after the value")
            pos = eol.end()
            if key is not None:
                found.append(EnvBinding(key=key, value=value, start=start, end=end, quote=quote))
        except (ValueError, IndexError):
            pos = _REST_OF_LINE.match(text, max(pos, line_start)).end()  # type: ignore[union-attr]
            if pos == line_start:  # nothing consumed: step over the character
                pos += 1
    return found


def env_values(text: str) -> dict[str, str]:
    """KEY -> value as compose sees them (the last binding of a key wins)."""
    return {b.key: b.value for b in bindings(text) if b.value is not None}


def set_env_value(text: str, *, key: str, value: str, path: str = ".env") -> str:
    """``text`` with ``key``'s value replaced by ``value`` in its quoting; nothing else moves."""
    last = next((b for b in reversed(bindings(text)) if b.key == key), None)
    if last is None or last.value is None:
        raise ComposeEditError(f"{path} does not set {key}; rollbot changes the value that is "
                               "there and adds none")
    if "$" in last.value:
        raise ComposeEditError(f"{key} in {path} refers to another variable ({last.value}); "
                               "rollbot changes a version written out only")
    if not re.fullmatch(r"[A-Za-z0-9_.+-]+", value):
        raise ComposeEditError(f"'{value}' is not a tag rollbot writes into {path}")
    return f"{text[:last.start]}{last.quote}{value}{last.quote}{text[last.end:]}"
