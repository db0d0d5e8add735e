"""Log set-up for every entry point: text or one JSON object per line, the run bound to each.

A run binds its ``run_id`` and ``environment`` in context variables (``run_logged``); asyncio
copies them into every task the run starts (its event bus, its heartbeat), so each line logged
while the run is going names it, whichever module logs it. Stdlib ``logging`` only: the engine
imports this module, and it must stay free of any edge.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from bot.errors import ConfigError
from bot.redaction import install_log_redaction, redact

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_run_id: ContextVar[int | None] = ContextVar("rollbot_run_id", default=None)
_environment: ContextVar[str | None] = ContextVar("rollbot_environment", default=None)


@contextmanager
def run_logged(*, environment: str, run_id: int | None = None) -> Iterator[None]:
    """Bind ``environment`` (and ``run_id`` once the run has one) to every line logged inside."""
    env_token = _environment.set(environment)
    run_token = _run_id.set(run_id)
    try:
        yield
    finally:
        _run_id.reset(run_token)
        _environment.reset(env_token)


def bound() -> dict[str, Any]:
    """What is bound now: ``run_id`` and ``environment``, only those that are set."""
    found: dict[str, Any] = {}
    if (run_id := _run_id.get()) is not None:
        found["run_id"] = run_id
    if (environment := _environment.get()) is not None:
        found["environment"] = environment
    return found


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, exception, run_id, environment."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            # redact() again: it is idempotent, and a record made before install_log_redaction
            # (or by a factory someone installed over ours) must not leak either.
            "message": redact(record.getMessage()),
        }
        line.update(bound())
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = redact(record.exc_text)
        if record.stack_info:
            line["stack"] = redact(record.stack_info)
        # ensure_ascii: a line is a line, whatever bytes a remote command printed
        return json.dumps(line, ensure_ascii=True, default=str)


def configure_logging(*, level: str, log_format: str) -> None:
    """Configure the root logger once, from ``ROLLBOT_LOG_LEVEL`` and ``ROLLBOT_LOG_FORMAT``.

    Raises ``ConfigError`` naming the variable when either is not a value it knows.
    """
    fmt = log_format.strip().lower()
    if fmt not in LOG_FORMATS:
        raise ConfigError(f"ROLLBOT_LOG_FORMAT is {log_format!r}: it must be 'text' or 'json'")
    numeric = logging.getLevelName(level.strip().upper())
    if not isinstance(numeric, int):
        raise ConfigError(f"ROLLBOT_LOG_LEVEL is {level!r}: it must be DEBUG, INFO, WARNING, "
                          "ERROR or CRITICAL")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):  # once per process; a second call replaces, never doubles
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    if fmt == "json":
        # What Python itself would print to stderr (warnings, an unhandled exception) goes
        # through logging too, so a log pipeline never meets a line that is not JSON.
        logging.captureWarnings(True)
        sys.excepthook = _log_unhandled
    install_log_redaction()  # asyncssh logs every command at INFO, passwords included


def _log_unhandled(kind: type[BaseException], error: BaseException,
                   traceback: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, traceback)
        return
    logging.getLogger("rollbot").critical("rollbot stopped on an unhandled error",
                                          exc_info=(kind, error, traceback))
