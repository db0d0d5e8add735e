"""Resume rollback: a cancelled run's procedure again, without the steps it already did."""

from __future__ import annotations

from bot.errors import HostError
from bot.procedures import commands as cmd
from bot.procedures.base import Procedure, Safeguard, Step, StepContext
from bot.procedures.restore import DROP, SAFETY_BACKUP
from bot.recovery.offers import RecoveryOffer


def resume_procedure(full: Procedure, offer: RecoveryOffer) -> Procedure:
    """``full`` without the steps already done, safeguards re-established in this run."""
    done = set(offer.done_steps)
    remaining = [s for s in full.steps if s.key not in done]
    needed = {g for s in remaining for g in s.requires}
    steps: list[Step] = []
    for step in full.steps:
        if step.key not in done:
            steps.append(step)
        elif step.establishes is not None and step.establishes in needed:
            if step.key == SAFETY_BACKUP and DROP in done:
                steps.append(_verify_kept_safety_backup(offer))
            else:
                steps.append(step)  # read-only or a fresh copy: safe to do again
    return Procedure(
        name=full.name, title=f"{full.title}, resumed after run #{offer.run_id}",
        initial_state=offer.host_state, steps=tuple(steps),
        succeeded_state=full.succeeded_state,
        succeeded_message=f"Rolled back to {offer.to_version} (resuming run #{offer.run_id}): "
                          f"{full.succeeded_state}.",
    )


def _verify_kept_safety_backup(offer: RecoveryOffer) -> Step:
    path = offer.run_facts().safety_backup
    inner = (f"test -s {cmd.quote(path)} && gunzip -t {cmd.quote(path)}"
             f" && gunzip -c {cmd.quote(path)} | tail -n 5 | grep -q {cmd.quote(cmd.DUMP_TRAILER)}"
             f" && ls -l {cmd.quote(path)}")
    c = cmd.join("bash", "-o", "pipefail", "-c", inner)

    async def action(ctx: StepContext) -> str:
        if not path:
            raise HostError(f"run #{offer.run_id} recorded no safety backup")
        db = ctx.env.database
        await ctx.host.run(c, timeout=db.restore_timeout_s if db else 600.0, on_line=ctx.emit)
        ctx.facts.safety_backup = path
        return f"safety backup {path} is complete"

    return Step(key="verify_safety_backup",
                title=f"Verify the safety backup run #{offer.run_id} wrote", action=action,
                shows=(c,), leaves=offer.host_state, timeout_s=3605,
                establishes=Safeguard.SAFETY_BACKUP_WRITTEN,
                if_failed=f"the safety backup {path or '?'} is missing or incomplete: nothing more "
                          "was run; restore by hand with the DBA.")
