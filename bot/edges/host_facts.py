"""Read-only questions asked of the host: what runs, which versions exist, which backups."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from datetime import UTC, datetime

from bot.autorollback.deploys import Quarantined
from bot.config import DatabaseConfig, EnvironmentConfig
from bot.errors import InvalidInput
from bot.model import Backup, Check, ContainerState, ImageTag
from bot.ports import DockerFacts, RemoteHost
from bot.procedures.release_files import read_release
from bot.shell import file_name, join
from bot.versions import try_parse_version

_LIST_TIMEOUT_S = 30.0


async def compose_tag(host: RemoteHost, env: EnvironmentConfig) -> str:
    """The tag the compose file names for the service (a ${VAR} tag resolved as compose does)."""
    return (await read_release(host, env)).tag


def running_tag(containers: list[ContainerState], env: EnvironmentConfig,
                service: str | None = None) -> str | None:
    """The tag of the service's running container, if one runs (default: the first service)."""
    service = service or env.service
    image = env.services.get(service, env.image)
    for c in containers:
        if c.service == service and c.up:
            repo, sep, tag = c.image.rpartition(":")
            if sep and (repo == image or repo.endswith("/" + image)):
                return tag
    return None


def running_tags(containers: list[ContainerState], env: EnvironmentConfig
                 ) -> dict[str, str | None]:
    """Each listed service's running tag (None: no container of it runs)."""
    return {s: running_tag(containers, env, s) for s in env.services}


def all_run(containers: list[ContainerState], env: EnvironmentConfig, tag: str) -> bool:
    """Whether every listed service runs ``tag``."""
    return all(t == tag for t in running_tags(containers, env).values())


def running_text(containers: list[ContainerState], env: EnvironmentConfig) -> str:
    """"api runs v1.2.3", "api and worker run v1.2.3", or who runs what when they differ."""
    tags = running_tags(containers, env)
    seen = set(tags.values())
    if len(seen) == 1 and None not in seen:
        names = list(tags)
        both = " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
        return f"{both} {'run' if len(names) > 1 else 'runs'} {next(iter(seen))}"
    return ", ".join(f"{s} runs {t}" if t else f"no {s} container runs" for s, t in tags.items())


async def images_tags(docker: DockerFacts, env: EnvironmentConfig, *,
                      known: dict[str, list[ImageTag]] | None = None
                      ) -> dict[str, list[ImageTag]]:
    """Each listed service's image -> its tags on the host (``known`` ones not asked again)."""
    found = dict(known or {})
    for image in env.services.values():
        if image not in found:
            found[image] = await docker.image_tags(image)
    return {image: found[image] for image in env.services.values()}


def target_images_check(images: dict[str, list[ImageTag]], target: str) -> Check:
    """"Target image present" for every image the release switches."""
    missing = [i for i, tags in images.items() if not any(t.tag == target for t in tags)]
    if missing:
        present = ", ".join(t.tag for t in images[missing[0]][:6]) or "none"
        return Check("Target image present", False,
                     f"{', '.join(f'{i}:{target}' for i in missing)} "
                     f"{'is' if len(missing) == 1 else 'are'} not on the host (present: "
                     f"{present})")
    built = {i: next(t for t in tags if t.tag == target) for i, tags in images.items()}
    return Check("Target image present", True, "; ".join(
        f"{i}:{target} present, built {t.created:%Y-%m-%d %H:%M} UTC" for i, t in built.items()))


def previous_version(tags: list[ImageTag], current: str) -> ImageTag | None:
    """The highest release version present on the host that is lower than ``current``."""
    now = try_parse_version(current)
    if now is None:
        return None
    older = [t for t in tags if t.version is not None and t.version < now]
    return max(older, key=lambda t: t.version or now, default=None)


def previous_release(tags: list[ImageTag], current: str, quarantined: Sequence[Quarantined]
                     ) -> tuple[ImageTag | None, tuple[Quarantined, ...]]:
    """The highest release below ``current`` that is not quarantined, and the ones skipped."""
    now = try_parse_version(current)
    if now is None:
        return None, ()
    bad = {q.version: q for q in quarantined}
    older = sorted((t for t in tags if t.version is not None and t.version < now),
                   key=lambda t: t.version or now, reverse=True)
    skipped: list[Quarantined] = []
    for tag in older:
        if tag.tag not in bad:
            return tag, tuple(skipped)
        skipped.append(bad[tag.tag])
    return None, tuple(skipped)


def skipped_text(skipped: Sequence[Quarantined]) -> str:
    """"skipped v1.2.2: quarantined by U0BOB on 2026-11-27 (reason)", for card, plan and CLI."""
    return "; ".join(f"skipped {q.version}: quarantined by {q.by} on {q.at:%Y-%m-%d %H:%M} UTC"
                     f" ({q.reason or 'no reason given'})" for q in skipped)


def list_backups_command(db: DatabaseConfig) -> str:
    # GNU find on the host: one line per file, "<mtime epoch> <size> <name>".
    return join("find", db.backups_dir, "-maxdepth", "1", "-type", "f", "-name",
                db.backup_glob, "-printf", "%T@ %s %f\\n")


async def list_backups(host: RemoteHost, db: DatabaseConfig) -> list[Backup]:
    """Backups in ``backups_dir`` matching ``backup_glob``, newest first."""
    result = await host.run(list_backups_command(db), timeout=_LIST_TIMEOUT_S)
    backups = []
    for line in result.output.splitlines():
        parts = line.split(" ", 2)
        if len(parts) != 3:
            continue
        mtime, size, name = parts
        try:
            backups.append(Backup(
                name=name, path=f"{db.backups_dir.rstrip('/')}/{name}", size=int(size),
                modified=datetime.fromtimestamp(float(mtime), tz=UTC),
            ))
        except ValueError:
            continue
    return sorted(backups, key=lambda b: b.modified, reverse=True)


def choose_backup(backups: list[Backup], db: DatabaseConfig, wanted: str | None) -> Backup:
    """The named backup, or the newest that is not a pre-restore safety backup."""
    if wanted is not None:
        name = file_name(wanted, what="Backup")
        if not fnmatch.fnmatchcase(name, db.backup_glob):
            raise InvalidInput(
                f"Backup '{name}' does not match the configured pattern {db.backup_glob}."
            )
        found = next((b for b in backups if b.name == name), None)
        if found is None:
            raise InvalidInput(f"There is no backup '{name}' in {db.backups_dir}.")
        return found
    regular = [b for b in backups if not b.is_safety_backup]
    if not regular:
        raise InvalidInput(f"There is no backup matching {db.backup_glob} in {db.backups_dir}.")
    return regular[0]


def age_text(when: datetime, now: datetime | None = None) -> str:
    seconds = int(((now or datetime.now(UTC)) - when).total_seconds())
    if seconds < 3600:
        return f"{max(seconds, 0) // 60} min old"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h old"
    return f"{seconds // 86400} days old"


async def docker_summary(docker: DockerFacts, env: EnvironmentConfig
                         ) -> tuple[list[ImageTag], list[ContainerState]]:
    tags = await docker.image_tags(env.image)
    containers = await docker.compose_containers(env.compose)
    return tags, containers


_SEPARATOR = re.compile(r"-+(\+-+)*")
_TIME_COLUMNS = ("executed", "applied", "run_on", "migrated")


def newest_migrations(output: str, count: int) -> tuple[str, ...] | None:
    """The ``count`` newest migrations in a psql-style table; None when the output is no table.

    Rows are described by their ``name`` column and their time column when there are such
    columns, newest first (sorted by the time column when there is one).
    """
    lines = output.splitlines()
    at = next((i for i, ln in enumerate(lines) if _SEPARATOR.fullmatch(ln.strip())), None)
    if at is None or at == 0:
        return None
    header = [h.strip().lower() for h in lines[at - 1].split("|")]
    rows = []
    for ln in lines[at + 1:]:
        if not ln.strip() or ln.strip().startswith("("):
            break
        rows.append([c.strip() for c in ln.split("|")])
    name_col = next((i for i, h in enumerate(header) if h in ("name", "migration")), None)
    time_col = next((i for i, h in enumerate(header) if any(t in h for t in _TIME_COLUMNS)),
                    None)
    if time_col is not None:
        rows.sort(key=lambda r: r[time_col] if time_col < len(r) else "", reverse=True)

    def describe(r: list[str]) -> str:
        if name_col is None or name_col >= len(r):
            return " · ".join(c for c in r if c)
        when = f" (applied {r[time_col]})" if time_col is not None and time_col < len(r) else ""
        return r[name_col] + when
    return tuple(describe(r) for r in rows[:count])
