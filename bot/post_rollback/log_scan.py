"""Which service log lines count as errors and warnings in the verification checks.

The patterns are case-aware on purpose. The spec's ``grep -i error`` counts "0 errors",
"error_count=0" and "errorHandler registered" as failures, so a healthy service fails its checks
and people learn to ignore them. A line counts as an *error* when it carries an error level or
names an exception: ``ERROR``/``FATAL``/``CRITICAL``/``SEVERE``/``PANIC`` in capitals,
``level=error`` (logfmt; also ``lvl=``/``severity=``, and fatal/panic/crit values, any case),
JSON ``"level":"error"`` (and pino's numeric 50/60), ``[error]`` (nginx, Apache), an exception
class name (``TypeError``, ``ReferenceError``, ``java.lang.NullPointerException``), Node's
``Error: …``, Java's ``Exception in thread``, Go's ``panic:`` and ``fatal error:``, and Python's
``Traceback (most recent call last)``. Lower-case prose ("retrying after error") does not count;
a runbook that wants it sets ``error_log_pattern``. Warnings follow the same rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_BAD_LEVEL = r"(?i:error|eror|err|fatal|panic|crit|critical|alert|emerg|emergency)"
_WARN_LEVEL = r"(?i:warn|warning)"

DEFAULT_ERROR_LOG_PATTERN = "|".join((
    r"\b(?:ERROR|FATAL|CRITICAL|SEVERE|PANIC)\b",          # level words in capitals
    rf"\b(?:level|lvl|severity)=\"?{_BAD_LEVEL}\b",          # logfmt (logrus, log15, slog)
    rf"\"(?:level|lvl|severity)\"\s*:\s*\"{_BAD_LEVEL}\"",   # JSON (bunyan, zap, structlog)
    r"\"level\"\s*:\s*[56]0\b",                              # JSON from pino: 50 error, 60 fatal
    r"\[(?:\w+:)?(?:error|crit|alert|emerg)\]",              # nginx, Apache
    r"\b[A-Z][A-Za-z0-9]*(?:Error|Exception)\b",             # TypeError, NullPointerException
    r"\b(?:Error|Exception):",                               # Node's "Error: connect …"
    r"\bException in thread\b",                              # the JVM's uncaught exception
    r"\bpanic:",                                             # Go
    r"\bfatal error:",                                       # the Go runtime
    r"\bTraceback \(most recent call last\)",                # Python
))

WARNING_LOG_PATTERN = re.compile("|".join((
    r"\b(?:WARN|WARNING)\b",
    rf"\b(?:level|lvl|severity)=\"?{_WARN_LEVEL}\b",
    rf"\"(?:level|lvl|severity)\"\s*:\s*\"{_WARN_LEVEL}\"",
    r"\"level\"\s*:\s*40\b",                                 # pino
    r"\[(?:\w+:)?warn\]",
    r"\b[A-Z][A-Za-z0-9]*Warning\b",                         # DeprecationWarning
    r"\bWarning:",                                           # Node's "(node:1) Warning: …"
)))

MAX_PATTERN_LENGTH = 2000


def check_error_pattern(text: str) -> str:
    """Validate ``error_log_pattern`` at config load; the message says what is wrong with it."""
    if len(text) > MAX_PATTERN_LENGTH:
        raise ValueError(f"is {len(text)} characters long; keep it under {MAX_PATTERN_LENGTH}")
    try:
        compiled = re.compile(text)
    except re.error as exc:
        where = f" at position {exc.pos}" if exc.pos is not None else ""
        raise ValueError(f"is not a valid regular expression: {exc.msg}{where}") from None
    if compiled.search("") is not None:
        raise ValueError("matches an empty line, so every log line would count as an error; "
                         "make it match only error lines")
    return text


def matching(lines: Iterable[str], pattern: re.Pattern[str]) -> list[str]:
    """The lines the pattern finds something in, in order."""
    return [line for line in lines if pattern.search(line)]


def error_lines(lines: Iterable[str], pattern: str = DEFAULT_ERROR_LOG_PATTERN) -> list[str]:
    return matching(lines, re.compile(pattern))


def warning_lines(lines: Iterable[str]) -> list[str]:
    return matching(lines, WARNING_LOG_PATTERN)
