"""The ``[notify]`` runbook table: the webhooks events go to, checked when rollbot starts.

The runbook names, for each webhook, the environment variable holding its HMAC secret
(``secret_env``), never the secret itself; ``resolve_webhooks`` reads those variables (the process
environment, then ``.env`` as the settings do) and refuses to start on an unset or empty one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.errors import ConfigError


class EventName(StrEnum):
    """Every event a webhook may ask for (``test`` is sent only by ``rollbot notify test``)."""

    ROLLBACK_STARTED = "rollback.started"
    ROLLBACK_SUCCEEDED = "rollback.succeeded"
    ROLLBACK_FAILED = "rollback.failed"
    VERIFICATION_COMPLETED = "verification.completed"
    VERSION_QUARANTINED = "version.quarantined"
    DEPLOY_COUNTDOWN = "deploy.countdown"


ALL_EVENTS = tuple(EventName)
# The retry schedule: 6 tries over 10 minutes (0, 15 s, 1 min, 2.5 min, 5.5 min, 10 min).
RETRY_DELAYS_S = (15.0, 45.0, 90.0, 180.0, 270.0)
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class WebhookConfig(_Frozen):
    """One ``[[notify.webhooks]]`` entry, as written in the runbook."""

    url: str = Field(min_length=1, max_length=2000)
    secret_env: str = Field(pattern=_ENV_NAME)
    # Plain strings here: an unknown name is refused with the list of known ones, naming the
    # webhook (resolve_webhooks), rather than as pydantic's enum error.
    events: tuple[str, ...] = tuple(e.value for e in ALL_EVENTS)


class NotifyConfig(_Frozen):
    """``[notify]``: the webhooks, and how their deliveries are paced."""

    webhooks: tuple[WebhookConfig, ...] = ()
    # Seconds before each retry; len + 1 tries in all. Tests shorten it; the default is the spec's.
    retry_delays_s: tuple[Annotated[float, Field(ge=0)], ...] = Field(
        default=RETRY_DELAYS_S, min_length=1, max_length=50)
    timeout_s: float = Field(default=5.0, gt=0, le=60)     # one delivery attempt, whole
    poll_s: float = Field(default=1.0, gt=0, le=60)        # how often the outbox is looked at


@dataclass(frozen=True)
class Webhook:
    """A webhook ready to sign: its URL, its secret (read from ``secret_env``), its events."""

    url: str
    secret_env: str
    secret: str
    events: frozenset[EventName]

    def __repr__(self) -> str:  # never the secret, in a log or a traceback
        return f"Webhook(url={self.url!r}, secret_env={self.secret_env!r})"


SecretLookup = Callable[[str], str | None]


def environment_secrets(environ: Mapping[str, str], env_file: Path | None) -> SecretLookup:
    """Look a variable up in the process environment, then in ``env_file`` (like Settings)."""
    from_file: dict[str, object] = {}
    if env_file is not None and env_file.is_file():
        from_file = dict(_EnvFile(_env_file=env_file).model_extra or {})  # type: ignore[call-arg]

    def lookup(name: str) -> str | None:
        if name in environ:
            return environ[name]
        value = from_file.get(name)
        return None if value is None else str(value)
    return lookup


class _EnvFile(BaseSettings):
    """Every variable of a ``.env`` file, read the way ``Settings`` reads it."""

    model_config = SettingsConfigDict(extra="allow", case_sensitive=True)


def resolve_webhooks(config: NotifyConfig, secrets: SecretLookup) -> tuple[Webhook, ...]:
    """Every configured webhook with its secret; ``ConfigError`` naming the webhook on a fault."""
    known = {e.value: e for e in ALL_EVENTS}
    resolved: list[Webhook] = []
    seen: set[str] = set()
    for i, hook in enumerate(config.webhooks):
        where = f"notify.webhooks[{i}] ({hook.url[:80]})"
        if not hook.url.startswith(("http://", "https://")) or " " in hook.url:
            raise ConfigError(f"{where}: url must be an http:// or https:// address; events "
                              "are POSTed to it")
        if hook.url in seen:
            raise ConfigError(f"{where}: this url is listed twice; list each webhook once")
        seen.add(hook.url)
        unknown = [e for e in hook.events if e not in known]
        if unknown:
            raise ConfigError(f"{where}: events: '{unknown[0][:60]}' is not an event rollbot "
                              f"sends; the events are {', '.join(known)}")
        if not hook.events:
            raise ConfigError(f"{where}: events is empty; leave it out to send every event")
        secret = secrets(hook.secret_env)
        if not secret:
            state = "is empty" if secret is not None else "is not set"
            raise ConfigError(f"{where}: the environment variable {hook.secret_env} "
                              f"{state}; it must hold the secret the events are signed with "
                              "(the receiver checks X-Rollbot-Signature with the same value)")
        resolved.append(Webhook(url=hook.url, secret_env=hook.secret_env, secret=secret,
                                events=frozenset(known[e] for e in hook.events)))
    return tuple(resolved)
