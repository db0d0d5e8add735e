"""The Slack front stays thin (it never opens a store); every module reads in one sitting."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
HANDLERS = ROOT / "handlers"
STORE = re.compile(r"\bstore\.|_store\.|\w*Store\(")


def modules(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


def test_no_module_of_the_slack_front_touches_a_store() -> None:
    found = [f"{p.relative_to(HANDLERS.parent)}:{n}: {line.strip()}"
             for p in modules("handlers") for n, line in enumerate(p.read_text().splitlines(), 1)
             if STORE.search(line)]
    assert found == []


def test_modules_stay_under_450_lines_and_classes_under_300() -> None:
    for p in modules("bot", "handlers"):
        source = p.read_text()
        assert len(source.splitlines()) <= 450, p
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                assert size <= 300, f"{p}: class {node.name} has {size} lines"
