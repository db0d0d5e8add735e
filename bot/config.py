"""Configuration: secrets and endpoints from the environment, the runbook from ``rollbot.toml``.

The runbook is a boundary (a file a person edits), so it is parsed with pydantic into frozen models
and every problem becomes one ``ConfigError`` naming the file and the key.
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.errors import ConfigError
from bot.notify.config import NotifyConfig
from bot.post_rollback.log_scan import DEFAULT_ERROR_LOG_PATTERN, check_error_pattern
from bot.shell import check_pg_dump_prefix, check_psql_prefix, check_runbook_command

RunbookCommand = Annotated[str, AfterValidator(check_runbook_command)]
# rollbot pipes into psql and out of pg_dump: one simple command each, no `&&`, `;`, `|`…
PsqlCommand = Annotated[str, AfterValidator(check_psql_prefix)]
PgDumpCommand = Annotated[str, AfterValidator(check_pg_dump_prefix)]


_HOST_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SshConfig(_Frozen):
    host: str = Field(min_length=1)
    port: int = Field(default=22, ge=1, le=65535)
    user: str = Field(min_length=1)
    key_file: Path
    known_hosts: Path
    connect_timeout_s: float = Field(default=10.0, gt=0)


def _compose_name(name: str) -> str:
    """A project name as compose normalises it (lowercase; only ``[-_a-z0-9]`` kept)."""
    return re.sub(r"[^-_a-z0-9]", "", name.lower())


class ComposeConfig(_Frozen):
    file: str = Field(min_length=2, pattern=r"^/")
    command: RunbookCommand = "docker-compose"
    project: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")

    @property
    def directory(self) -> str:
        return self.file.rsplit("/", 1)[0] or "/"

    @property
    def named_project(self) -> str | None:
        """The project as told: ``project``, else ``-p``/``--project-name`` in the command."""
        if self.project:
            return self.project
        words = self.command.split()
        for i, word in enumerate(words):
            if word in ("-p", "--project-name") and i + 1 < len(words):
                return _compose_name(words[i + 1].strip("'\""))
            if word.startswith("--project-name="):
                return _compose_name(word.split("=", 1)[1].strip("'\""))
        return None

    @property
    def described(self) -> str:
        """How messages name the project: by its name when told, else by where compose runs."""
        named = self.named_project
        return f"compose project '{named}'" if named else f"the compose project of {self.file}"

    @property
    def project_name(self) -> str:
        """The project's name for messages: as told, else the directory's (compose's default).

        Which containers belong to the project is decided by their labels (bot/edges/docker.py),
        so a name from ``.env`` or the file's ``name:`` is honoured there.
        """
        if self.named_project:
            return self.named_project
        base = self.directory.rstrip("/").rsplit("/", 1)[-1].lower()
        return re.sub(r"[^a-z0-9_-]", "", base) or "default"


class DatabaseConfig(_Frozen):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
    # In a fleet, the host whose psql/pg_dump/backups the database work uses (default: the first).
    host: str | None = Field(default=None, pattern=_HOST_NAME)
    psql: PsqlCommand
    pg_dump: PgDumpCommand
    backups_dir: str = Field(pattern=r"^/")
    backup_glob: str = Field(pattern=r"^[A-Za-z0-9_.*?-]+$")
    retention_days: int = Field(default=30, ge=1)
    verify_tables: tuple[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")], ...] = ()
    migrate_down: RunbookCommand | None = None
    migrate_status: RunbookCommand | None = None
    migrations_to_undo: int = Field(default=1, ge=1)
    restore_timeout_s: float = Field(default=1800.0, gt=0)


class TimeoutsConfig(_Frozen):
    """Per-step timeouts in seconds; generous, because a hung step is stopped, never waited out."""

    command_s: float = Field(default=120.0, gt=0)
    compose_down_s: float = Field(default=120.0, gt=0)
    compose_up_s: float = Field(default=300.0, gt=0)
    health_s: float = Field(default=120.0, gt=0)
    emergency_health_s: float = Field(default=30.0, gt=0)
    health_interval_s: float = Field(default=0.2, gt=0)
    # The whole pre-flight (card and run), every host and check; a stalled read is named.
    preflight_s: float = Field(default=120.0, gt=0)


class AutoRollbackConfig(_Frozen):
    """The watch after a deploy announced by CI, and the countdown before rolling back."""

    enabled: bool = True
    # The spec: "monitor for 30 minutes", a look every `interval_seconds`.
    watch_minutes: float = Field(default=30.0, gt=0, le=24 * 60)
    # Older runbooks counted checks instead; when set, the watch is exactly this many checks.
    checks: int | None = Field(default=None, ge=1, le=100_000)
    interval_seconds: float = Field(default=10.0, gt=0)
    countdown_seconds: float = Field(default=60.0, ge=0)
    max_5xx_ratio: float = Field(default=0.2, ge=0, le=1)
    # The 5xx ratio is judged over the last N checks: one minute at the default interval, so a
    # single bad answer does not roll back, and an hour of good answers does not hide a bad minute.
    window_checks: int = Field(default=6, ge=1, le=10_000)
    # `start_failed` / `migration_failed` are CI's word only: without trust they are offered as
    # buttons; with it they count down like a trigger rollbot saw itself.
    trust_ci_failures: bool = False

    @property
    def planned_checks(self) -> int:
        """How many looks the watch takes: ``checks``, else one now and one per interval after."""
        if self.checks is not None:
            return self.checks
        # The epsilon keeps 0.9 / 0.3 at 3 intervals, not 3.0000000000000004 -> 3 or 2.99… -> 2.
        return math.floor(self.watch_minutes * 60 / self.interval_seconds + 1e-9) + 1


_SERVICE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
_IMAGE = r"^[a-z0-9][a-z0-9._/-]{0,127}(:[0-9]{1,5}/[a-z0-9._/-]+)?$"
# What a `[[environments.X.hosts]]` entry may set; everything else is the environment's.
_PER_HOST_KEYS = ("name", "ssh", "compose", "health_url", "version_url", "smoke_urls",
                  "service_health_urls")


class FleetConfig(_Frozen):
    """How a rollback walks the hosts: the canary alone and verified, then batches."""

    canary: int = Field(default=1, ge=0)
    batch_size: int | None = Field(default=None, ge=1)  # None: all the rest at once
    max_failed_hosts: int = Field(default=0, ge=0)


class HostConfig(_Frozen):
    """One host of a fleet, as listed: its name; the rest is merged into its environment."""

    name: str = Field(pattern=_HOST_NAME)


class EnvironmentConfig(_Frozen):
    # The one-service form; with `services`, these name the first service of the map.
    service: str = Field(pattern=_SERVICE)
    image: str = Field(pattern=_IMAGE)
    # Every service a release switches, service -> image; the one-service form is {service: image}.
    services: dict[Annotated[str, Field(pattern=_SERVICE)],
                   Annotated[str, Field(pattern=_IMAGE)]] = Field(default_factory=dict)
    health_url: str = Field(pattern=r"^https?://")
    version_url: str = Field(pattern=r"^https?://")
    # The key holding the version when version_url answers JSON, e.g. {"version": "v1.2.2"}.
    version_json_key: str = Field(default="version", min_length=1, max_length=64)
    smoke_urls: tuple[Annotated[str, Field(pattern=r"^https?://")], ...] = ()
    ssh: SshConfig
    compose: ComposeConfig
    database: DatabaseConfig | None = None
    timeouts: TimeoutsConfig = TimeoutsConfig()
    auto_rollback: AutoRollbackConfig = AutoRollbackConfig()
    verify_after_minutes: tuple[Annotated[float, Field(gt=0)], ...] = (5.0, 30.0, 120.0)
    # What the checks count as an error line (see bot/post_rollback/log_scan.py), how many
    # warning lines the Extended and Comprehensive checks tolerate, and how much of a
    # verify_tables table may go.
    error_log_pattern: Annotated[str, AfterValidator(check_error_pattern)] = (
        DEFAULT_ERROR_LOG_PATTERN)
    max_warning_lines: int = Field(default=20, ge=0)
    max_row_loss_ratio: float = Field(default=0.01, ge=0, le=1)
    smoke_command: RunbookCommand | None = None      # the spec's `npm run test:smoke`
    service_health_urls: dict[str, Annotated[str, Field(pattern=r"^https?://")]] = Field(
        default_factory=dict)                         # the spec's api/auth/payment health URLs
    # A fleet: each listed host's ssh/compose are merged over the environment's; its URLs
    # replace the environment's. Without hosts the environment is one host (ssh.host).
    # The environment-level ssh/compose/URLs are then the first host's, merged.
    hosts: tuple[HostConfig, ...] = ()
    fleet: FleetConfig = FleetConfig()
    # Each host, fully merged (its own ssh/compose/URLs); filled by the validator below.
    host_envs: tuple[EnvironmentConfig, ...] = Field(default=(), exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _merge(cls, data: object) -> object:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        services = data.get("services")
        if services:
            if not isinstance(services, dict):
                raise ValueError("services: must be a table of service = \"image\"")
            first = next(iter(services.items()))
            if (("service" in data or "image" in data)
                    and (data.get("service"), data.get("image")) != first):
                raise ValueError("give either services = {...} or service/image, not both")
            data["service"], data["image"] = first
        elif "service" in data and "image" in data:
            data["services"] = {data["service"]: data["image"]}
        hosts = data.get("hosts")
        if hosts and "host_envs" not in data:
            if not isinstance(hosts, list | tuple):
                raise ValueError("hosts: must be a list of [[hosts]] tables")
            data["host_envs"] = tuple(_merged_host(data, h, i) for i, h in enumerate(hosts))
            data["hosts"] = tuple({"name": h["name"]} if isinstance(h, dict) and "name" in h
                                  else h for h in hosts)
            first = data["host_envs"][0]
            for key in ("ssh", "compose", "health_url", "version_url"):
                if key in first:
                    data[key] = first[key]
        return data

    @model_validator(mode="after")
    def _check(self) -> EnvironmentConfig:
        images = list(self.services.values())
        twice = sorted({i for i in images if images.count(i) > 1})
        if twice:
            raise ValueError(f"services: image '{twice[0]}' is named by two services; each "
                             "service of a release has its own image")
        names = [h.name for h in self.hosts]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"hosts: two hosts are named '{dup[0]}'; host names must be unique")
        count = max(len(self.hosts), 1)
        if self.fleet.canary > count:
            raise ValueError(f"fleet.canary: {self.fleet.canary} canary hosts, but the "
                             f"environment has {count} host(s)")
        if self.database is not None and self.database.host is not None:
            if self.database.host not in names:
                raise ValueError(f"database.host: '{self.database.host}' is not one of the "
                                 f"hosts ({', '.join(names) or 'none listed'})")
        return self

    @property
    def members(self) -> tuple[tuple[str, EnvironmentConfig], ...]:
        """Every host as (name, its whole environment); one host: named by its ssh host."""
        if not self.hosts:
            return ((self.ssh.host, self),)
        return tuple((h.name, e) for h, e in zip(self.hosts, self.host_envs, strict=True))

    @property
    def database_member(self) -> tuple[str, EnvironmentConfig]:
        """The host the database work runs on: `database.host`, else the first."""
        chosen = self.database.host if self.database is not None else None
        for name, env in self.members:
            if chosen is None or name == chosen:
                return name, env
        return self.members[0]  # unreachable: the validator checked database.host


def _merged_host(env: dict[str, object], host: object, index: int) -> dict[str, object]:
    """One `[[hosts]]` entry over its environment: ssh/compose merged, the rest replaced."""
    where = f"hosts[{index}]"
    if not isinstance(host, dict):
        raise ValueError(f"{where}: must be a table")
    unknown = sorted(set(host) - set(_PER_HOST_KEYS))
    if unknown:
        raise ValueError(f"{where}.{unknown[0]}: not a per-host setting (a host may set "
                         f"{', '.join(_PER_HOST_KEYS)})")
    if "name" not in host:
        raise ValueError(f"{where}.name: missing (every host needs a name)")
    merged = {k: v for k, v in env.items() if k not in ("hosts", "host_envs", "fleet")}
    if isinstance(db := merged.get("database"), dict):
        merged["database"] = {k: v for k, v in db.items() if k != "host"}
    for key in ("ssh", "compose"):
        base, own = env.get(key) or {}, host.get(key) or {}
        if not isinstance(base, dict) or not isinstance(own, dict):
            raise ValueError(f"{where}.{key}: must be a table")
        merged[key] = {**base, **own}
    for key in ("health_url", "version_url", "smoke_urls", "service_health_urls"):
        if key in host:
            merged[key] = host[key]
    for key in ("ssh", "compose", "health_url", "version_url"):
        if not merged.get(key):
            raise ValueError(f"{where}.{key}: missing, here and at the environment level")
    try:
        EnvironmentConfig.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        sub = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{where}.{sub}: {first['msg']}") from None
    return merged


_SLACK_CHANNEL = r"^(C[A-Z0-9]{2,20}|G[A-Z0-9]{2,20}|#[a-z0-9][a-z0-9_-]{0,79})$"
_SLACK_USER = r"^[UW][A-Z0-9]{2,20}$"


class SlackConfig(_Frozen):
    """Where rollbot listens and who may drive it."""

    incidents_channel: str = Field(pattern=_SLACK_CHANNEL)
    oncall_channel: str | None = Field(default=None, pattern=_SLACK_CHANNEL)
    allowed_users: tuple[Annotated[str, Field(pattern=_SLACK_USER)], ...] = ()
    allowed_usergroups: tuple[Annotated[str, Field(pattern=r"^S[A-Z0-9]{2,20}$")], ...] = ()
    restore_approvers: tuple[Annotated[str, Field(pattern=_SLACK_USER)], ...] | None = None
    restore_requires_second_approver: bool = True
    migrations_requires_second_approver: bool = True
    card_ttl_minutes: float = Field(default=15.0, gt=0)
    usergroup_cache_s: float = Field(default=60.0, ge=0)

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(c for c in (self.incidents_channel, self.oncall_channel) if c)


class Runbook(_Frozen):
    default_environment: str
    environments: dict[str, EnvironmentConfig] = Field(min_length=1)
    slack: SlackConfig | None = None
    incident_logs_dir: Path = Path("incident-logs")
    notify: NotifyConfig = NotifyConfig()  # signed events out (bot/notify/)

    @model_validator(mode="after")
    def _default_exists(self) -> Runbook:
        if self.default_environment not in self.environments:
            raise ValueError(
                f"default_environment '{self.default_environment}' is not one of "
                f"[environments.*]: {', '.join(sorted(self.environments))}"
            )
        return self

    def environment(self, name: str | None) -> tuple[str, EnvironmentConfig]:
        """The named environment, or the default one."""
        from bot.errors import InvalidInput

        chosen = name or self.default_environment
        if chosen not in self.environments:
            raise InvalidInput(
                f"There is no environment '{chosen[:40]}'. Known: "
                f"{', '.join(sorted(self.environments))}."
            )
        return chosen, self.environments[chosen]


class Settings(BaseSettings):
    """Secrets and endpoints, from the environment or ``.env``."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str | None = None
    rollbot_config: Path = Path("rollbot.toml")
    rollbot_data_dir: Path = Path(".rollbot")
    rollbot_log_level: str = "WARNING"
    rollbot_log_format: str = "text"  # or "json": one object per line (bot/telemetry/logs.py)
    slack_bot_token: str | None = None
    slack_signing_secret: str | None = None
    slack_app_token: str | None = None
    slack_api_url: str = "https://slack.com/api/"
    rollbot_webhook_secret: str | None = None
    # Where `rollbot serve` listens: loopback unless told (the container image sets 0.0.0.0).
    host: str = "127.0.0.1"
    port: int = 3000


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    # A check across keys (a model validator) names its own key first: "hosts: ...".
    own = re.match(r"Value error, ([A-Za-z_][\w.\[\]]*): (.*)", msg, re.S)
    if first["type"] == "value_error" and own:
        return f"key '{key}.{own.group(1)}': {own.group(2)}"
    if first["type"] == "missing":
        return f"key '{key}' is missing"
    if first["type"] == "extra_forbidden":
        return f"key '{key}' is not a known setting (a typo?)"
    return f"key '{key}': {msg}"


def load_runbook(path: Path) -> Runbook:
    """Read and validate the runbook; one clear ``ConfigError`` naming file and key on any fault."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: runbook file not found (set ROLLBOT_CONFIG)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the runbook: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return Runbook.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from None
