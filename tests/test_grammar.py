"""What on-call types after /rollback: parsed and validated, or refused with what was wrong."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.errors import InvalidInput
from bot.model import ProcedureName
from handlers.grammar import CommandKind, GrammarError, parse_command


@pytest.mark.parametrize(("text", "kind", "version", "procedure", "reason"), [
    ("v1.2.2", CommandKind.ROLLBACK, "v1.2.2", ProcedureName.SIMPLE, ""),
    ("v1.2.2 users see 500s", CommandKind.ROLLBACK, "v1.2.2", ProcedureName.SIMPLE,
     "users see 500s"),
    ("previous site is down", CommandKind.ROLLBACK, None, ProcedureName.SIMPLE, "site is down"),
    ("--emergency everything is down", CommandKind.ROLLBACK, None, ProcedureName.EMERGENCY,
     "everything is down"),
    ("v1.2.2 --migrations", CommandKind.ROLLBACK, "v1.2.2", ProcedureName.MIGRATIONS, ""),
    ("v1.2.2 --restore orders corrupted", CommandKind.ROLLBACK, "v1.2.2",
     ProcedureName.RESTORE, "orders corrupted"),
    ("plan v1.2.2", CommandKind.PLAN, "v1.2.2", ProcedureName.SIMPLE, ""),
    ("plan v1.2.2 --restore", CommandKind.PLAN, "v1.2.2", ProcedureName.RESTORE, ""),
])
def test_rollback_commands(text: str, kind: CommandKind, version: str | None,
                           procedure: ProcedureName, reason: str) -> None:
    c = parse_command(text)
    assert (c.kind, str(c.version) if c.version else None, c.procedure, c.reason) == (
        kind, version, procedure, reason)


def test_restore_with_a_named_backup_and_environment() -> None:
    c = parse_command("v1.2.2 --restore azora_prod_20261127T020000.sql.gz --env staging bad")
    assert c.backup == "azora_prod_20261127T020000.sql.gz"
    assert c.environment == "staging" and c.reason == "bad"


@pytest.mark.parametrize("word", ["help", "status", "history", "versions", "backups", "cancel"])
def test_simple_commands(word: str) -> None:
    assert parse_command(word).kind == CommandKind(word)
    assert parse_command(word.upper()).kind == CommandKind(word)


@pytest.mark.parametrize(("text", "says"), [
    ("", "Say what to roll back to"),
    ("v1.2.2; rm -rf /", "not a release version"),
    ("v1.2.2;", "not a release version"),
    ("$(reboot)", "I don't know"),
    ("stauts", "I don't know"),
    ("v1.2.2 --restore --emergency", "Choose one of"),
    ("v1.2.2 --force", "Unknown option"),
    ("v1.2.2 --env", "needs an environment name"),
    ("v1.2.2 --env ../../etc", "needs an environment name"),
    ("v1.2.2 --restore ../../etc/passwd.gz", "not a plain file name"),
    ("status now", "takes no arguments"),
    ("--emergency v1.2.2", "Put the version first"),
    ("v1.2.2 " + "x" * 600, "too long"),
])
def test_refusals_say_what_was_wrong(text: str, says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        parse_command(text)


@given(st.text(max_size=80))
def test_any_text_parses_or_is_refused_cleanly(text: str) -> None:
    try:
        c = parse_command(text)
    except GrammarError:
        return
    except InvalidInput:
        return
    # whatever gets through is validated: versions, backup names and environments are inert
    if c.version is not None:
        assert str(c.version) in text
    for value in (c.backup or "", c.environment or ""):
        assert not set(value) & set(";|&$`'\"\\<>(){} \n/")


@pytest.mark.parametrize("name", ["azora_prod_20261127T020000", "latest.bak",
                                  "azora_prod_2026-11-27.dump", "backup_of_tuesday"])
def test_a_restore_name_that_is_no_backup_file_is_an_error_not_a_reason(name: str) -> None:
    # Taken as a reason, it would silently restore the newest backup instead.
    with pytest.raises(GrammarError, match="is not a backup file name"):
        parse_command(f"v1.2.2 --restore {name} orders corrupted")


@pytest.mark.parametrize(("text", "reason"), [
    ("v1.2.2 --restore orders corrupted", "orders corrupted"),
    ("v1.2.2 --restore 500s everywhere", "500s everywhere"),
    ("v1.2.2 --restore v1.2.3 broke orders", "v1.2.3 broke orders"),
])
def test_a_reason_after_restore_still_means_the_newest_backup(text: str, reason: str) -> None:
    c = parse_command(text)
    assert (c.procedure, c.backup, c.reason) == (ProcedureName.RESTORE, None, reason)
