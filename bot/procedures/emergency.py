"""Procedure 4: the emergency rollback, the fastest path: stop, drop :latest, switch, start."""

from __future__ import annotations

from bot.model import ProcedureName, RunStatus
from bot.procedures import commands as cmd
from bot.procedures import restore, steps
from bot.procedures.base import Procedure, ProcedureInputs, ProcedureTitle, Step

TITLE = ProcedureTitle(
    name=ProcedureName.EMERGENCY, number=4,
    words="emergency rollback", note="fastest",
    spec_heading="Emergency Rollback (Fastest)",
    use_when="Service completely down, need immediate recovery",
)


def procedure(i: ProcedureInputs) -> Procedure:
    s = i.env.service
    remove = cmd.remove_latest_tag(i.env)
    return Procedure(
        name=TITLE.name, title=TITLE.title,
        initial_state=f"untouched: {s} still runs {i.current}",
        steps=(
            steps.stop(i, f"services STOPPED; compose file still names {i.current}"),
            Step(key="remove_latest",
                 title=f"Remove {':latest, '.join(i.env.services.values())}:latest (if present)",
                 action=steps.run_command(remove, timeout=steps.COMMAND_S), shows=(remove,),
                 leaves=f"services STOPPED; compose file still names {i.current}",
                 timeout_s=steps.COMMAND_S + 5, destructive=True, if_failed=steps.ADVICE_DOWN),
            steps.switch(i, f"services STOPPED; compose file names {i.target}"),
            steps.start(i),
            steps.wait_healthy(
                i, deadline_s=i.env.timeouts.emergency_health_s, title="Verify immediately",
                failure_status=RunStatus.RESTORE_RECOMMENDED,
                if_failed=f"restore from backup: run the `{restore.TITLE.name}` procedure "
                          f"(Procedure {restore.TITLE.number}).",
            ),
        ),
        succeeded_state=f"{s} runs {i.target} and answers healthy",
    )
