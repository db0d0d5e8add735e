"""Each procedure is named once, in its own module; the card, report and verdict read it."""

from __future__ import annotations

import ast
from datetime import datetime
from pathlib import Path

import pytest

from bot.decision import Scenario, assess
from bot.model import ProcedureName
from bot.post_rollback.report_markdown import render_report
from bot.procedures.catalog import TITLES, ProcedureInputs, build
from handlers.assess import verdict_message
from handlers.blocks.cards import card_body
from tests.test_blocks import BACKUP, ENV, plan, text_of
from tests.test_decision import answers
from tests.test_report import inputs, run_record

ROOT = Path(__file__).resolve().parent.parent
FOUR = (ProcedureName.SIMPLE, ProcedureName.MIGRATIONS, ProcedureName.RESTORE,
        ProcedureName.EMERGENCY)


def string_literals() -> list[tuple[str, str]]:
    """(module path, text) of every string in bot/ and handlers/ code; docstrings left out."""
    found = []
    for path in sorted([*ROOT.glob("bot/**/*.py"), *ROOT.glob("handlers/**/*.py")]):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {
            id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef
                          | ast.AsyncFunctionDef)
            and node.body and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        found += [(path.relative_to(ROOT).as_posix(), node.value) for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and isinstance(node.value, str)
                  and id(node) not in docstrings]
    return found


LITERALS = string_literals()


@pytest.mark.parametrize("name", list(ProcedureName))
def test_every_procedure_is_named_once_in_its_own_module(name: ProcedureName) -> None:
    t = TITLES[name]
    assert t.name is name
    for text in filter(None, (t.words, t.spec_heading, t.use_when)):
        assert [path for path, s in LITERALS if text in s] == [
            f"bot/procedures/{name.value}.py"], text


def test_the_four_are_the_spec_s_procedures_1_to_4() -> None:
    assert [TITLES[p].number for p in FOUR] == [1, 2, 3, 4]
    assert TITLES[ProcedureName.RESTORE].heading == (
        "Procedure 3: Full Database Restore from Backup")
    assert TITLES[ProcedureName.SIMPLE].title == "Simple service rollback (no data changes)"
    assert TITLES[ProcedureName.EMERGENCY].reference == "Procedure 4, emergency rollback"


@pytest.mark.parametrize("name", FOUR)
def test_the_run_and_its_card_carry_the_catalog_title(name: ProcedureName) -> None:
    t = TITLES[name]
    procedure = build(name, ProcedureInputs(env=ENV, current="v1.2.3", target="v1.2.2",
                                            epoch=1, backup=BACKUP))
    assert procedure.title == t.title
    p = plan(name)
    assert f"*Procedure:* {t.title}" in text_of(card_body(p))


@pytest.mark.parametrize("name", FOUR)
def test_the_report_names_the_procedure_with_the_spec_s_heading(name: ProcedureName) -> None:
    t = TITLES[name]
    text = render_report(inputs(run_record(procedure=name, backup=BACKUP.name)),
                         generated_at=datetime.fromisoformat("2026-11-27T04:00:00+00:00"))
    assert f"- Procedure: {name.value} — {t.heading}" in text
    assert f"with Procedure {t.number} (" in text


@pytest.mark.parametrize(("scenario", "data_loss", "name"), [
    (Scenario.CRITICAL_BUG, False, ProcedureName.SIMPLE),
    (Scenario.CRITICAL_BUG, True, ProcedureName.MIGRATIONS),
    (Scenario.DATA_CORRUPTION, False, ProcedureName.RESTORE),
    (Scenario.SERVICE_DOWN, False, ProcedureName.EMERGENCY),
])
def test_the_verdict_recommends_the_procedure_by_its_spec_name(
        scenario: Scenario, data_loss: bool, name: ProcedureName) -> None:
    t = TITLES[name]
    a = answers(scenario, data_loss_if_rolled_back=data_loss)
    v = assess(a)
    assert v.recommended_procedure is name
    assert v.reasons[-1] == (f"Recommended procedure: {t.reference} (spec, “Use when”: "
                             f"“{t.use_when}”).")
    assert f"*Recommended:* {t.reference}, to" in text_of(
        verdict_message(v, a, version_hint="v1.2.2"))
