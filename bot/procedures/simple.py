"""Procedure 1: a simple service rollback, code only: stop, switch the image tag, start, check."""

from __future__ import annotations

from bot.model import ProcedureName
from bot.procedures import steps
from bot.procedures.base import Procedure, ProcedureInputs, ProcedureTitle

TITLE = ProcedureTitle(
    name=ProcedureName.SIMPLE, number=1,
    words="simple service rollback", note="no data changes",
    spec_heading="Simple Service Rollback (No Data Changes)",
    use_when="Code issue only, no database changes",
)


def procedure(i: ProcedureInputs) -> Procedure:
    s = i.env.service
    return Procedure(
        name=TITLE.name, title=TITLE.title,
        initial_state=f"untouched: {s} still runs {i.current}",
        steps=(
            steps.check_current(i),
            steps.stop(i, f"services STOPPED; compose file still names {i.current}"),
            *steps.bring_up(i, f"services STOPPED; compose file names {i.target}"),
        ),
        succeeded_state=f"{s} runs {i.target}, healthy, all services up",
    )
