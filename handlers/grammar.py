"""The `/rollback` grammar: what a person types, parsed into a validated command, or a refusal.

    /rollback help
    /rollback [VERSION|previous] [--migrations | --restore [BACKUP] | --emergency] [--env NAME]
              [reason text…]
    /rollback plan [VERSION] …     /rollback status|history|versions|backups|cancel

Nothing here touches a shell; everything that later could (version, backup, environment) is
validated now. A reason needs a version or a flag before it, so a typo such as `/rollback stauts`
is an error rather than a rollback card.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from bot.errors import InvalidInput
from bot.model import ProcedureName
from bot.shell import file_name
from bot.versions import Version, parse_version

MAX_REASON = 500
_ENV_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,40}")
_LOOKS_LIKE_VERSION = re.compile(r"[vV]?[0-9]+\.[0-9].*")
_BACKUP_SUFFIXES = (".gz", ".sql")
# A word after --restore that looks like a file name (a dot, a slash, an underscore, a date...)
# is taken as the backup's NAME, never as the first word of a reason: a mistyped name must not
# silently become "the newest backup".
_LOOKS_LIKE_FILE = re.compile(r".*([./\\_*~]|[0-9]{4}).*")


class CommandKind(StrEnum):
    HELP = "help"
    ROLLBACK = "rollback"
    PLAN = "plan"
    STATUS = "status"
    HISTORY = "history"
    VERSIONS = "versions"
    BACKUPS = "backups"
    CANCEL = "cancel"
    ASSESS = "assess"
    UNQUARANTINE = "unquarantine"


_SIMPLE_KINDS = {CommandKind.HELP, CommandKind.STATUS, CommandKind.HISTORY,
                 CommandKind.VERSIONS, CommandKind.BACKUPS, CommandKind.CANCEL,
                 CommandKind.ASSESS}

_FLAG_PROCEDURE = {
    "--migrations": ProcedureName.MIGRATIONS,
    "--restore": ProcedureName.RESTORE,
    "--emergency": ProcedureName.EMERGENCY,
}


@dataclass(frozen=True)
class Command:
    kind: CommandKind
    version: Version | None = None
    procedure: ProcedureName = ProcedureName.SIMPLE
    backup: str | None = None
    environment: str | None = None
    reason: str = ""


class GrammarError(InvalidInput):
    """The text is not a `/rollback` command; the message says what was wrong."""


HELP = """*rollbot* rolls production back, step by step, with its safeguards.
• `/rollback v1.2.2 [reason…]`: show the pre-flight card for rolling back to v1.2.2
• `/rollback previous [reason…]`: the same, to the version before the running one
• `/rollback v1.2.2 --migrations`: also roll back the newest database migration
• `/rollback v1.2.2 --restore [BACKUP]`: restore the database from a backup (data loss; two people)
• `/rollback v1.2.2 --emergency`: fastest path, one confirmation
• `--env NAME` picks another environment from the runbook
• `/rollback plan v1.2.2`: the exact steps and commands, nothing runs
• `/rollback assess`: roll back or fix forward? The spec's decision matrix
• `/rollback unquarantine v1.2.3`: let CI deploy a rolled-back version again
• `/rollback status` · `history` · `versions` · `backups` · `cancel`"""


def parse_command(text: str) -> Command:
    """Parse the text after `/rollback` (or after `@rollbot`)."""
    tokens = text.split()
    if not tokens:
        raise GrammarError("Say what to roll back to, e.g. `/rollback v1.2.2`.")
    head = tokens[0].lower()
    if head in CommandKind.__members__.values() and CommandKind(head) in _SIMPLE_KINDS:
        if len(tokens) > 1:
            raise GrammarError(f"`{head}` takes no arguments (got `{_show(tokens[1])}`).")
        return Command(kind=CommandKind(head))
    if head == CommandKind.UNQUARANTINE:
        if len(tokens) < 2:
            raise GrammarError("Say which version: `/rollback unquarantine v1.2.3`.")
        # After the version: `--env NAME` and a reason, as for a rollback ("previous" is a
        # placeholder so the shared parser reads the rest).
        rest = _parse_rollback(["previous", *tokens[2:]], kind=CommandKind.UNQUARANTINE)
        if rest.procedure is not ProcedureName.SIMPLE:
            raise GrammarError("`unquarantine` takes a version, `--env` and a reason only.")
        return Command(kind=CommandKind.UNQUARANTINE, version=parse_version(tokens[1]),
                       environment=rest.environment, reason=rest.reason)
    if head == CommandKind.PLAN:
        return _parse_rollback(tokens[1:], kind=CommandKind.PLAN)
    return _parse_rollback(tokens, kind=CommandKind.ROLLBACK)


def _parse_rollback(tokens: list[str], *, kind: CommandKind) -> Command:
    version: Version | None = None
    procedures: list[ProcedureName] = []
    backup: str | None = None
    environment: str | None = None
    reason: list[str] = []
    i = 0
    if tokens and tokens[0].lower() == "previous":
        i = 1
    elif tokens and _LOOKS_LIKE_VERSION.fullmatch(tokens[0]):
        version = parse_version(tokens[0])
        i = 1
    elif tokens and not tokens[0].startswith("--"):
        raise GrammarError(f"I don't know `{_show(tokens[0])}`: start with a version "
                           "(`v1.2.2`), `previous`, a flag or a command.")
    while i < len(tokens):
        token = tokens[i]
        if token in _FLAG_PROCEDURE:
            procedures.append(_FLAG_PROCEDURE[token])
            if token == "--restore" and i + 1 < len(tokens) and _names_a_backup(tokens[i + 1]):
                backup = _backup_name(tokens[i + 1])
                i += 1
        elif token == "--env":
            if i + 1 >= len(tokens) or _ENV_NAME.fullmatch(tokens[i + 1]) is None:
                raise GrammarError("`--env` needs an environment name, e.g. `--env staging`.")
            environment = tokens[i + 1]
            i += 1
        elif token.startswith("--"):
            raise GrammarError(f"Unknown option `{_show(token)}`.")
        elif _LOOKS_LIKE_VERSION.fullmatch(token) and version is None and not reason:
            raise GrammarError(f"Put the version first: `/rollback {_show(token)} …`.")
        else:
            reason.append(token)
        i += 1
    if len(set(procedures)) > 1:
        raise GrammarError("Choose one of `--migrations`, `--restore` and `--emergency`.")
    text = " ".join(reason)
    if len(text) > MAX_REASON:
        raise GrammarError(f"The reason is too long ({len(text)} characters, at most "
                           f"{MAX_REASON}).")
    return Command(kind=kind, version=version,
                   procedure=procedures[0] if procedures else ProcedureName.SIMPLE,
                   backup=backup, environment=environment, reason=text)


def _names_a_backup(token: str) -> bool:
    if _LOOKS_LIKE_VERSION.fullmatch(token):
        return False  # "--restore v1.2.3 broke orders": a reason that starts with a version
    return token.endswith(_BACKUP_SUFFIXES) or _LOOKS_LIKE_FILE.fullmatch(token) is not None


def _backup_name(token: str) -> str:
    name = file_name(token, what="Backup")
    if not name.endswith(_BACKUP_SUFFIXES):
        raise GrammarError(
            f"`{_show(token)}` is not a backup file name (they end in .sql.gz or .sql). Name a "
            "file from `/rollback backups`, or leave the name out to restore the newest good "
            "backup.")
    return name


def _show(token: str) -> str:
    cleaned = token.replace("`", "'")
    return cleaned if len(cleaned) <= 40 else cleaned[:40] + "…"
