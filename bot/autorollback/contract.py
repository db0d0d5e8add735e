"""The deploy hook's contract: how CI signs its calls, and the bodies it may send.

CI tells rollbot about a deploy with ``POST /hooks/deploy`` and asks ``POST /hooks/deploy/allowed``
before deploying. Both are signed the way Slack signs rollbot's requests, with the shared
``ROLLBOT_WEBHOOK_SECRET``::

    X-Rollbot-Timestamp: <unix seconds>
    X-Rollbot-Signature: v0=<hex HMAC-SHA256(secret, "v0:{timestamp}:{raw body}")>

This module is pure (no I/O, no clock: the caller passes ``now``) so the server, the tests and any
Python client share one definition. ``deploy/hook-client.sh`` is the same contract in shell.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from enum import StrEnum
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from bot.errors import ConfigError, InvalidInput
from bot.versions import parse_version

TIMESTAMP_HEADER = "X-Rollbot-Timestamp"
SIGNATURE_HEADER = "X-Rollbot-Signature"
SIGNATURE_VERSION = "v0"
MAX_AGE_S = 300
# A real event is a few hundred bytes; anything far larger is refused before JSON parsing.
MAX_BODY_BYTES = 16 * 1024

_UNIX_SECONDS = re.compile(r"[0-9]{1,12}")


class BadSignature(InvalidInput):
    """A deploy hook request is unsigned, stale or signed with another secret; nothing was done."""


def _require_secret(secret: str) -> bytes:
    # An empty key would make every signature forgeable by anyone who guesses it is empty.
    if not secret:
        raise ConfigError(
            "ROLLBOT_WEBHOOK_SECRET is empty, so deploy hook requests can be neither signed nor "
            "checked; set it to the same long random value in rollbot and in CI."
        )
    return secret.encode()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Rollbot-Signature`` value for ``body`` sent at ``timestamp``: ``v0=<hex>``."""
    message = f"{SIGNATURE_VERSION}:{timestamp}:".encode() + body
    digest = hmac.new(_require_secret(secret), message, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def verify(
    secret: str,
    *,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: float,
    max_age_s: int = MAX_AGE_S,
) -> None:
    """Accept a signed request or raise ``BadSignature`` saying why it was refused."""
    _require_secret(secret)
    missing = [name for name, value in ((TIMESTAMP_HEADER, timestamp),
                                        (SIGNATURE_HEADER, signature)) if not value]
    if missing or timestamp is None or signature is None:
        raise BadSignature(
            f"The deploy hook request has no {' and no '.join(missing)} header, so it is not "
            "signed with ROLLBOT_WEBHOOK_SECRET; it was ignored and nothing was done."
        )
    if not _UNIX_SECONDS.fullmatch(timestamp):
        raise BadSignature(
            f"The deploy hook request's {TIMESTAMP_HEADER} {_shown(timestamp)} is not a Unix time "
            "in seconds; it was ignored and nothing was done."
        )
    age = now - int(timestamp)
    if age > max_age_s:
        raise BadSignature(
            f"The deploy hook request was signed {int(age)} seconds ago, more than the "
            f"{max_age_s} allowed, so it may be a replay; it was ignored and nothing was done."
        )
    if -age > max_age_s:
        raise BadSignature(
            f"The deploy hook request is timestamped {int(-age)} seconds in the future, more than "
            f"the {max_age_s} allowed; check the CI runner's clock. It was ignored and nothing "
            "was done."
        )
    expected = sign(secret, int(timestamp), body)
    # Bytes, not str: compare_digest refuses non-ASCII str, and a header may carry anything.
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        raise BadSignature(
            f"The deploy hook request's {SIGNATURE_HEADER} does not match its body: CI's "
            "ROLLBOT_WEBHOOK_SECRET differs from rollbot's, or the body was changed on the way. "
            "It was ignored and nothing was done."
        )


def _shown(text: str, limit: int = 40) -> str:
    """An untrusted value quoted for a message: printable, bounded."""
    clean = "".join(c if c.isprintable() else "?" for c in text[:limit])
    return f"'{clean}…'" if len(text) > limit else f"'{clean}'"


class DeployStage(StrEnum):
    """How far a deploy got before CI called the hook."""

    DEPLOYED = "deployed"
    MIGRATION_FAILED = "migration_failed"
    START_FAILED = "start_failed"


def _release_version(text: str) -> str:
    try:
        return str(parse_version(text))
    except InvalidInput as err:
        raise ValueError(str(err)) from None


_ENVIRONMENT_RULE = r"^[A-Za-z0-9_-]{1,64}$"
_NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"

EnvironmentName = Annotated[str, Field(pattern=_ENVIRONMENT_RULE)]
ReleaseVersion = Annotated[str, AfterValidator(_release_version)]


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DeployEvent(_Body):
    """CI's report of a deploy (body of ``POST /hooks/deploy``)."""

    environment: EnvironmentName
    version: ReleaseVersion
    previous_version: ReleaseVersion
    stage: DeployStage
    commit: str = Field(default="", pattern=r"^([0-9a-fA-F]{7,40})?$")
    actor: str = Field(default="", max_length=100, pattern=_NO_CONTROL)
    run_url: str = Field(default="", max_length=500,
                         pattern=r"^(https?://[^\s\x00-\x1f\x7f]+)?$")


class AllowedQuery(_Body):
    """CI's question before deploying (body of ``POST /hooks/deploy/allowed``)."""

    environment: EnvironmentName
    version: ReleaseVersion


_M = TypeVar("_M", bound=_Body)

# What each field must look like, said to the person reading CI's log.
_RULES = {
    "environment": "1 to 64 letters, digits, '_' or '-'",
    "commit": "a git commit id of 7 to 40 hexadecimal characters, or empty",
    "actor": "at most 100 characters, without control characters such as newlines",
    "run_url": "an http:// or https:// URL of at most 500 characters without spaces, or empty",
}


def parse_event(body: bytes) -> DeployEvent:
    """Parse a deploy event, or raise ``InvalidInput`` naming the first bad field."""
    return _parse(DeployEvent, body, what="deploy hook")


def parse_query(body: bytes) -> AllowedQuery:
    """Parse a deploy-allowed question, or raise ``InvalidInput`` naming the first bad field."""
    return _parse(AllowedQuery, body, what="deploy-allowed")


def _parse(model: type[_M], body: bytes, *, what: str) -> _M:
    if len(body) > MAX_BODY_BYTES:
        raise InvalidInput(
            f"The {what} body is {len(body)} bytes; at most {MAX_BODY_BYTES} are accepted."
        )
    try:
        return model.model_validate_json(body)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        raise InvalidInput(_reason(model, first, what=what)) from None


def _reason(model: type[_Body], error: Any, *, what: str) -> str:
    """One sentence about one pydantic error, naming the field."""
    kind: str = error["type"]
    loc: tuple[int | str, ...] = error["loc"]
    fields = ", ".join(model.model_fields)
    if kind == "json_invalid":
        detail = error.get("ctx", {}).get("error", "")
        return f"The {what} body is not valid JSON ({detail}); send one JSON object."
    if not loc:
        return f"The {what} body must be a JSON object with the fields {fields}."
    name = str(loc[0])
    if kind == "extra_forbidden":
        return f"The {what} body has an unknown field {_shown(name)}; the fields are {fields}."
    if kind == "missing":
        return f"The {what} body has no '{name}' field, which is required."
    if kind == "string_type":
        return f"The {what} field '{name}' must be a JSON string."
    if kind == "enum":
        stages = ", ".join(s.value for s in DeployStage)
        return (f"The {what} field '{name}' is {_shown(str(error['input']))}; "
                f"it must be one of {stages}.")
    if kind == "value_error":
        # The validator's own sentence (e.g. parse_version's), without pydantic's prefix.
        return f"The {what} field '{name}' is not accepted: {error['ctx']['error']}"
    rule = _RULES.get(name, "as documented")
    return f"The {what} field '{name}' must be {rule}."
