"""The procedures by name: what each takes, what each is called, and building one to run."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from bot.model import ProcedureName
from bot.procedures import emergency, migrations, put_back, restore, simple
from bot.procedures.base import Procedure, ProcedureInputs, ProcedureTitle

__all__ = ["BUILDERS", "TITLES", "ProcedureInputs", "build"]

BUILDERS: Mapping[ProcedureName, Callable[[ProcedureInputs], Procedure]] = MappingProxyType({
    ProcedureName.SIMPLE: simple.procedure,
    ProcedureName.MIGRATIONS: migrations.procedure,
    ProcedureName.RESTORE: restore.procedure,
    ProcedureName.EMERGENCY: emergency.procedure,
})

# Each title is written once, in its procedure's module; the card, the report and the decision
# matrix read it here.
TITLES: Mapping[ProcedureName, ProcedureTitle] = MappingProxyType({
    t.name: t for t in (simple.TITLE, migrations.TITLE, restore.TITLE, emergency.TITLE,
                        put_back.TITLE)
})


def build(name: ProcedureName, inputs: ProcedureInputs) -> Procedure:
    """The named procedure, its steps filled in from ``inputs``."""
    return BUILDERS[name](inputs)
