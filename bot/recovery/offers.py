"""The offer after a cancel that left production down, its pre-flight and its recorder."""


from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from bot.config import EnvironmentConfig
from bot.edges.host_facts import compose_tag, docker_summary, images_tags, list_backups
from bot.errors import HostError
from bot.events import Observer, RunEvent, RunFinished, StepFinished
from bot.model import (
    Backup,
    Check,
    ProcedureName,
    RunRecord,
    RunStatus,
    StepResult,
    StepStatus,
)
from bot.ports import DockerFacts, RemoteHost
from bot.procedures.base import RunFacts, StepContext
from bot.procedures.release_files import parse_release, read_env_text, read_release
from bot.procedures.restore import DROP
from bot.procedures.steps import START, STOP, SWITCH

log = logging.getLogger(__name__)

# The Put back's first step (bot/procedures/put_back.py): it makes the compose file name the old
# version again.
PUT_BACK_COMPOSE = "put_back_compose"
_DATA_CHANGES = {
    "migrate_down": "rolled back a database migration",
    DROP: "dropped the database",
    "create_database": "re-created the database",
    "restore_backup": "restored the database from a backup",
}
ABANDONED_CHOICE_S = 300  # chosen, but no run began: the process died between the two


class RecoveryChoice(StrEnum):
    RESUME = "resume"
    PUT_BACK = "put_back"

    @property
    def label(self) -> str:
        return "Resume rollback" if self is RecoveryChoice.RESUME else "Put back what ran before"


@dataclass(frozen=True)
class RecoveryOffer:
    """What a cancelled run left production in, and the choice made about it (if any)."""

    run_id: int
    environment: str
    procedure: ProcedureName
    from_version: str
    to_version: str
    backup: str | None
    backup_size: int | None
    backup_modified: datetime | None
    done_steps: tuple[str, ...]
    host_state: str
    facts: str  # RunFacts as JSON: a frozen value, turned back into RunFacts for each run
    put_back_refusal: str = ""
    state: str = "offered"
    choice: RecoveryChoice | None = None
    chosen_by: str | None = None
    continuation: int | None = None

    def run_facts(self) -> RunFacts:
        return RunFacts(**json.loads(self.facts or "{}"))


@dataclass(frozen=True)
class Claim:
    """A click on Resume / Put back: the offer as it now is, and whether this click took it."""

    offer: RecoveryOffer | None
    moved: bool
    reason: str = ""


def left_down(steps: Iterable[StepResult], *, started_down: bool = False) -> bool:
    """True when the services were stopped by the run (or before it) and not started again."""
    done = {s.key for s in steps if s.status is StepStatus.SUCCEEDED}
    if START in done:
        return False
    return started_down or STOP in done


def put_back_refusal(done: Iterable[str], *, run_id: int, from_version: str) -> str:
    """Why Put back is not offered ('' when it is): the run already changed the database."""
    changed = [what for key, what in _DATA_CHANGES.items() if key in set(done)]
    if not changed:
        return ""
    return (f"Put back is not offered: run #{run_id} already {' and '.join(changed)}, so starting "
            f"{from_version} again would not be what ran before. Resume the rollback instead.")


def interrupted_offer(run: RunRecord, *, host_state: str, facts: str) -> RecoveryOffer | None:
    """The offer for a run whose process died with production down (one host, a rollback)."""
    if (run.procedure is ProcedureName.PUT_BACK or any(s.host for s in run.steps)
            or not run.from_version or not run.to_version or not left_down(run.steps)):
        return None  # a fleet, a put-back, or production not left down: a fresh rollback
    done = {s.key for s in run.steps if s.status is StepStatus.SUCCEEDED}
    return RecoveryOffer(
        run_id=run.id, environment=run.environment, procedure=run.procedure,
        from_version=run.from_version, to_version=run.to_version, backup=run.backup,
        backup_size=None, backup_modified=None, done_steps=tuple(sorted(done)),
        host_state=host_state, facts=facts,
        put_back_refusal=put_back_refusal(done, run_id=run.id, from_version=run.from_version))


def down_sentence(host_state: str) -> str:
    """The plain words for the live message and the terminal."""
    return f"Production is DOWN: {host_state}."


# --- the pre-flight of a Resume or a Put back ----------------------------------------------

@dataclass(frozen=True)
class RecoveryPreflight:
    checks: tuple[Check, ...]
    in_compose_file: str
    backup: Backup | None

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def refusal(self) -> str:
        return " ".join(f"{c.name}: {c.detail}" for c in self.checks if not c.ok)


async def recovery_preflight(*, host: RemoteHost, docker: DockerFacts, env: EnvironmentConfig,
                             offer: RecoveryOffer, choice: RecoveryChoice) -> RecoveryPreflight:
    """Read-only: is the host still as the cancelled run left it, and is the choice possible?"""
    n = offer.run_id
    checks = [Check("Host reachable", True, f"SSH to {host.name} connected, host key verified")]
    tags, containers = await docker_summary(docker, env)
    in_file = await compose_tag(host, env)
    up = [c.name for c in containers if c.up]
    if up:
        checks.append(Check("Services still stopped", False,
                            f"{', '.join(up)} run again since run #{n} was cancelled; rollbot "
                            "only continues from the state it left. Look at the host, then start "
                            "a fresh rollback."))
    else:
        checks.append(Check("Services still stopped", True,
                            f"no container of {env.compose.described} runs, as run #{n} "
                            "left it"))
    if in_file not in (offer.from_version, offer.to_version):
        checks.append(Check("Compose file", False,
                            f"it names {in_file}, neither {offer.from_version} nor "
                            f"{offer.to_version}: someone changed it since run #{n}"))
    else:
        checks.append(Check("Compose file", True, f"names {in_file}, as run #{n} left it"))
    backup = None
    if choice is RecoveryChoice.RESUME:
        want = offer.to_version
        if offer.procedure is ProcedureName.RESTORE and env.database is not None:
            backup = await _pinned_backup(host, env, offer, checks)
    else:
        want = offer.from_version
        if offer.put_back_refusal:
            checks.append(Check("Put back possible", False, offer.put_back_refusal))
        elif in_file == offer.to_version:
            checks.append(await _kept_copy_check(host, env, offer))
    images = await images_tags(docker, env, known={env.image: tags})
    missing = [f"{i}:{want}" for i, t in images.items() if want not in {x.tag for x in t}]
    checks.append(Check("Image present", not missing,
                        f"{', '.join(missing)} is no longer on the host" if missing else
                        f"{', '.join(f'{i}:{want}' for i in images)} present"))
    return RecoveryPreflight(checks=tuple(checks), in_compose_file=in_file, backup=backup)


async def _pinned_backup(host: RemoteHost, env: EnvironmentConfig, offer: RecoveryOffer,
                         checks: list[Check]) -> Backup | None:
    assert env.database is not None
    found = next((b for b in await list_backups(host, env.database) if b.name == offer.backup),
                 None)
    if found is None:
        checks.append(Check("Approved backup", False,
                            f"{offer.backup} is gone from {env.database.backups_dir}"))
        return None
    same = (offer.backup_size in (None, found.size)
            and offer.backup_modified in (None, found.modified))
    checks.append(Check("Approved backup", same,
                        f"{found.name}, {found.size} bytes, the one run #{offer.run_id} was "
                        "approved with" if same else
                        f"{found.name} changed since run #{offer.run_id} was approved (size or "
                        "time differ): start a fresh restore"))
    return found if same else None


async def _kept_copy_check(host: RemoteHost, env: EnvironmentConfig,
                           offer: RecoveryOffer) -> Check:
    facts = offer.run_facts()
    kept, kept_env = facts.compose_backup, facts.env_file_backup
    name = "Kept compose file copy"
    if not kept and not kept_env:
        return Check(name, False,
                     f"run #{offer.run_id} switched the compose file but recorded no copy")
    copies = " and ".join(k for k in (kept, kept_env) if k)
    try:
        now = await read_release(host, env)
        compose_text = await host.read_file(kept) if kept else now.compose_text
        env_text = await read_env_text(host, kept_env) if kept_env else now.env_text
        release = parse_release(env, compose_text=compose_text, env_text=env_text,
                                env_file=now.env_file)
    except HostError as exc:
        return Check(name, False, str(exc))
    except Exception as exc:  # a damaged copy: say so, never put it in place
        return Check(name, False, f"{copies} is not usable: {exc}")
    if not release.names(offer.from_version):
        return Check(name, False,
                     f"{copies} names {release.describe()}, not {offer.from_version}")
    return Check(name, True, f"{copies} names {offer.from_version}")


class OfferBook(Protocol):
    """Where offers are kept (``bot.recovery.store.RecoveryStore``)."""

    async def offer(self, o: RecoveryOffer) -> None: ...

    async def keep_facts(self, run_id: int, facts: str) -> None: ...


def offer_recorder(store: OfferBook, *, environment: str, procedure: ProcedureName,
                   ctx: StepContext, backup: Backup | None,
                   base: RecoveryOffer | None = None) -> Observer:
    """An observer that records the offer when the run ends cancelled with production down.

    It also keeps the run's facts after each step (``runs.facts``), for an interrupted run.

    It runs before the fronts' observers, so the offer exists before any button shows it.
    ``base`` is the offer a continuation run (Resume / Put back) came from.
    """
    async def record(event: RunEvent) -> None:
        if isinstance(event, StepFinished):
            # Kept after each step: if this process dies, the offer made for the interrupted
            # run still knows the compose file copy and the safety backup.
            await store.keep_facts(event.run_id, json.dumps(asdict(ctx.facts)))
            return
        if not isinstance(event, RunFinished):
            return
        o = event.outcome
        if o.status is not RunStatus.CANCELLED or not left_down(o.steps,
                                                                started_down=base is not None):
            return
        done = {s.key for s in o.steps if s.status is StepStatus.SUCCEEDED}
        if base is None:
            all_done, proc = done, procedure
            old, target = ctx.current, ctx.target
            size, modified = ((backup.size, backup.modified) if backup else (None, None))
            name = backup.name if backup else None
        else:
            proc, old, target = base.procedure, base.from_version, base.to_version
            name, size, modified = base.backup, base.backup_size, base.backup_modified
            all_done = set(base.done_steps)
            if procedure is ProcedureName.PUT_BACK:
                if PUT_BACK_COMPOSE in done:
                    all_done.discard(SWITCH)  # the compose file names the old version again
            else:
                all_done |= done
        ordered = tuple(sorted(all_done))
        await store.offer(RecoveryOffer(
            run_id=o.run_id, environment=environment, procedure=proc, from_version=old,
            to_version=target, backup=name, backup_size=size, backup_modified=modified,
            done_steps=ordered, host_state=o.host_state, facts=json.dumps(asdict(ctx.facts)),
            put_back_refusal=put_back_refusal(all_done, run_id=o.run_id, from_version=old)))
    return record
