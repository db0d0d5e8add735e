"""A verification check reads the service logs: real error lines count, healthy chatter does not."""

import re

import pytest

from bot.post_rollback.log_scan import (
    DEFAULT_ERROR_LOG_PATTERN,
    check_error_pattern,
    error_lines,
    warning_lines,
)

# As `docker-compose logs --no-color --timestamps` shows them.
PREFIX = "api_1     | 2026-11-28T03:14:00.123456789Z "

ERRORS = [
    # Node
    "TypeError: Cannot read properties of undefined (reading 'id')",
    "ReferenceError: fetch is not defined",
    "Error: connect ECONNREFUSED 127.0.0.1:5432",
    "(node:1) UnhandledPromiseRejectionWarning: Error: payment gateway timed out",
    '{"level":50,"time":1795749240000,"pid":1,"hostname":"api","msg":"request failed"}',
    # Python
    "Traceback (most recent call last):",
    "ValueError: invalid literal for int() with base 10: 'abc'",
    "ERROR:app.payments:charge failed for order 42",
    "2026-11-28 03:14:00,123 CRITICAL [celery] worker lost",
    '{"event": "charge failed", "level": "error", "order": 42}',
    # Go
    "panic: runtime error: invalid memory address or nil pointer dereference",
    "fatal error: all goroutines are asleep - deadlock!",
    'time="2026-11-28T03:14:00Z" level=error msg="payment failed" error="dial tcp: i/o timeout"',
    '{"level":"error","ts":1795749240.1,"caller":"api/orders.go:42","msg":"query failed"}',
    'time=2026-11-28T03:14:00.000Z level=ERROR msg="query failed"',
    "t=2026-11-28T03:14:00+0000 lvl=eror msg=\"cannot reach payments\"",
    # Java
    'Exception in thread "main" java.lang.NullPointerException: Cannot invoke "String.length()"',
    "2026-11-28 03:14:00.123 ERROR 1 --- [nio-8080-exec-1] o.a.c.c.C.[.[.[/].[dispatcherServlet]"
    " : Servlet.service() threw exception",
    "Caused by: java.sql.SQLException: Connection refused",
    "SEVERE: Servlet.service() for servlet [jsp] threw exception",
    # nginx, and the sandbox's broken release
    "2026/11/28 03:14:00 [error] 29#29: *1 connect() failed (111: Connection refused)",
    "ERROR cannot reach payment service (payments.internal:443): connection refused",
]

HEALTHY = [
    "INFO azora-api v1.2.2 started on 127.0.0.1:8080, 0 errors",
    "metrics flushed: error_count=0 warnings_total=0",
    "errorHandler registered",
    "INFO:app:retry ok, errors=0",
    '{"level":30,"time":1795749240000,"msg":"0 errors in the last minute"}',
    '{"event": "db ready", "level": "info", "errors": 0}',
    'time="2026-11-28T03:14:00Z" level=info msg="request done" error_count=0',
    'level=info msg="retried after an error, now fine"',
    "2026-11-28 03:14:00.123  INFO 1 --- [main] o.s.b.w.e.tomcat.TomcatWebServer : Tomcat "
    "started on port(s): 8080",
    "2026-11-28 03:14:00.456  INFO 1 --- [main] o.s.b.w.s.ServletContextInitializerBeans : "
    "Mapping filter: 'ErrorPageFilter' to: [/*]",
    '172.18.0.1 - - [28/Nov/2026:03:14:00 +0000] "GET /api/errors HTTP/1.1" 200 12',
    "onError hook installed; handleError() ready",
    "Error rate over the last minute: 0.0%",
    "loglevel=error (only errors are logged from now on)",
]


@pytest.mark.parametrize("line", ERRORS)
def test_real_error_lines_count(line: str) -> None:
    assert error_lines([PREFIX + line]) == [PREFIX + line]


@pytest.mark.parametrize("line", HEALTHY)
def test_healthy_chatter_does_not_count(line: str) -> None:
    assert error_lines([PREFIX + line]) == []


def test_lines_are_kept_in_order() -> None:
    logs = [PREFIX + line for line in (HEALTHY[0], ERRORS[0], HEALTHY[1], ERRORS[10])]
    assert error_lines(logs) == [logs[1], logs[3]]


@pytest.mark.parametrize("line", [
    "WARN  [main] config key 'timeout' is deprecated",
    'time="2026-11-28T03:14:00Z" level=warning msg="slow query" took=2.1s',
    '{"level":40,"time":1795749240000,"msg":"pool nearly exhausted"}',
    '{"level":"warn","msg":"retrying"}',
    "(node:1) Warning: Accessing non-existent property 'x' of module exports",
    "/app/main.py:3: DeprecationWarning: the imp module is deprecated",
    "2026/11/28 03:14:00 [warn] 29#29: an upstream response is buffered",
])
def test_warning_lines_count(line: str) -> None:
    assert warning_lines([PREFIX + line]) == [PREFIX + line]


@pytest.mark.parametrize("line", ["build finished: 0 warnings", "warnings_total=0",
                                  "level=info msg=\"no warning signs\""])
def test_healthy_lines_are_not_warnings(line: str) -> None:
    assert warning_lines([PREFIX + line]) == []


def test_a_runbook_pattern_replaces_the_default() -> None:
    logs = [PREFIX + "payment declined: card expired", PREFIX + ERRORS[0]]
    assert error_lines(logs, r"payment declined") == [logs[0]]


def test_the_default_pattern_is_valid_and_never_matches_an_empty_line() -> None:
    assert check_error_pattern(DEFAULT_ERROR_LOG_PATTERN) == DEFAULT_ERROR_LOG_PATTERN
    assert re.compile(DEFAULT_ERROR_LOG_PATTERN).search("") is None


@pytest.mark.parametrize(("pattern", "says"), [
    ("(ERROR", "not a valid regular expression: missing ), unterminated subpattern at "
               "position 0"),
    ("ERROR|", "matches an empty line"),
    (".*", "matches an empty line"),
    ("x" * 2001, "keep it under 2000"),
])
def test_a_bad_pattern_is_explained(pattern: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        check_error_pattern(pattern)
