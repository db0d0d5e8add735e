"""Hiding secrets in text that leaves rollbot: commands shown, errors, output lines, logs.

Runbook commands such as ``env PGPASSWORD=… psql …`` or ``psql postgresql://user:pw@host/db``
are sent to the host as written; everything a person or a log sees goes through ``redact``:

- ``NAME=value`` and ``--name=value`` where the name holds PASS (so PASSWORD, PASSWD,
  PGPASSWORD), TOKEN or SECRET anywhere, or KEY as a word of its own (``API_KEY``, ``apiKey``,
  ``APIKEY``, ``AWS_SECRET_ACCESS_KEY``), or PWD as the last word of a longer name
  (``MYSQL_PWD``). KEY must be a word so that ``KEYBOARD_LAYOUT=us`` or ``monkey=1`` stay as they
  are; a shell's ``PWD=/srv`` is the working directory, not a password. Quoted values
  (``NAME='a b'``, ``NAME="a b"``) are hidden whole.
- URL credentials: ``scheme://user:pw@`` becomes ``scheme://user:***@``.
- HTTP ``Authorization`` values: ``Bearer xyz`` and ``Basic xyz`` become ``Bearer ***``.

It hides what it can recognise; a password passed as a bare argument (``mysql -pSECRET``,
``psql --password`` then a prompt) is not recognisable and is not hidden. ``redact`` is
idempotent, so text may pass through it more than once.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

MASK = "***"

_ANYWHERE = ("PASS", "TOKEN", "SECRET")
# KEY counts only as a word: these are the usual run-together spellings of a key's name.
_KEY_WORDS = frozenset({
    "KEY", "KEYS", "APIKEY", "ACCESSKEY", "PRIVATEKEY", "SECRETKEY", "AUTHKEY", "SSHKEY",
    "MASTERKEY", "SIGNINGKEY", "ENCRYPTIONKEY", "LICENSEKEY", "CLIENTKEY",
})
_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")

# NAME=value or --name=value, at the start of a shell word. The value is one shell word:
# quoted parts, backslash escapes and plain characters up to a space or a shell operator.
_ASSIGNMENT = re.compile(
    r"""(?<![\w.-])(?P<lead>-{0,2})(?P<name>[A-Za-z_][\w.-]*)="""
    r"""(?P<value>(?:'[^']*'|"(?:[^"\\]|\\.)*"|\\.|[^\s'"\\;&|<>()`])+)""")
# userinfo may not hold / ? # @ unencoded (RFC 3986), so the password stops at them.
_URL_CREDENTIALS = re.compile(
    r"""(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#@:'"]*):(?P<password>[^\s/?#@'"]+)@""")
_AUTHORIZATION = re.compile(r"\b(?P<scheme>Bearer|Basic)\s+(?P<value>[A-Za-z0-9._~+/=-]+)")


def is_secret_name(name: str) -> bool:
    """Whether a variable or option name says that its value is a secret."""
    upper = name.upper()
    if any(word in upper for word in _ANYWHERE):
        return True
    words = [w.upper() for w in _WORD_SPLIT.split(name) if w]
    if any(w in _KEY_WORDS for w in words):
        return True
    return len(words) > 1 and words[-1] == "PWD"


def _assignment(m: re.Match[str]) -> str:
    if not is_secret_name(m["name"]) or m["value"] == MASK:
        return m[0]
    return f"{m['lead']}{m['name']}={MASK}"


def _authorization(m: re.Match[str]) -> str:
    return f"{m['scheme']} {MASK}"


def redact(text: str) -> str:
    """``text`` with every secret rollbot recognises replaced by ``***``."""
    if not text:
        return text
    text = _URL_CREDENTIALS.sub(lambda m: f"{m['head']}:{MASK}@", text)
    text = _ASSIGNMENT.sub(_assignment, text)
    return _AUTHORIZATION.sub(_authorization, text)


class RedactingFilter(logging.Filter):
    """Redacts a log record in place: its message with its ``%s`` args, traceback and stack."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


def redact_record(record: logging.LogRecord) -> None:
    """Redact a record's message (args merged in), traceback text and stack text in place."""
    try:
        message = record.getMessage()
    except Exception:  # a broken format string: leave it for logging to report
        message = None
    if message is not None:
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
    elif record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


_installed: list[Callable[..., logging.LogRecord]] = []  # the factory ours wraps, once set


def install_log_redaction() -> None:
    """Redact every log record as it is made, whichever handler writes it.

    The filter runs in the record factory rather than on today's handlers: a handler filter
    misses handlers added later (pytest's caplog, an error tracker), and a logger filter misses
    records that propagate from child loggers such as asyncssh's, which logs each command.
    """
    if _installed:
        return
    previous = logging.getLogRecordFactory()
    redacting = RedactingFilter()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        redacting.filter(record)
        return record

    _installed.append(previous)
    logging.setLogRecordFactory(factory)
