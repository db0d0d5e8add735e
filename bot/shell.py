"""Building the shell commands rollbot sends: every value validated, then quoted."""

from __future__ import annotations

import re
import shlex

from bot.errors import InvalidInput

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")


def quote(value: str) -> str:
    """Quote one argument for a POSIX shell."""
    return shlex.quote(value)


def join(*args: str) -> str:
    """Join already-validated arguments into one command line, each quoted."""
    return " ".join(shlex.quote(a) for a in args)


def with_prefix(prefix: str, *args: str) -> str:
    """A command from the runbook (trusted, kept as written) followed by quoted arguments."""
    return " ".join([prefix, *(shlex.quote(a) for a in args)])


def sql_identifier(name: str, *, what: str) -> str:
    """Validate a database or table name; returned double-quoted for SQL."""
    if _IDENTIFIER.fullmatch(name) is None:
        raise InvalidInput(
            f"{what} '{name[:64]}' is not a plain SQL name (letters, digits and _ only)."
        )
    return f'"{name}"'


def file_name(name: str, *, what: str) -> str:
    """Validate a bare file name (no directory part, no leading dash or dot)."""
    if _FILE_NAME.fullmatch(name) is None or ".." in name:
        raise InvalidInput(
            f"{what} '{name[:80]}' is not a plain file name "
            "(letters, digits, '.', '_' and '-', no directories)."
        )
    return name


def check_runbook_command(text: str) -> str:
    """A command prefix from the runbook must be one line that a shell can parse."""
    if not text.strip() or any(c in text for c in "\n\r\0"):
        raise ValueError("must be a single non-empty command line")
    shlex.split(text)  # raises ValueError on unbalanced quotes
    return text
