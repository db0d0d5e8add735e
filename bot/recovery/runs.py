"""Resume or Put back, once chosen: a new run that continues the cancelled one, under the lock."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from bot.config import EnvironmentConfig
from bot.edges.session import open_session
from bot.engine import Run
from bot.errors import RollbotError
from bot.events import Observer
from bot.model import ProcedureName, RollbackRequest, RunOutcome, RunStatus
from bot.preflight_deadline import preflight_deadline
from bot.procedures.base import StepContext
from bot.procedures.catalog import ProcedureInputs, build
from bot.procedures.put_back import put_back_procedure
from bot.procedures.resume import resume_procedure
from bot.recovery.offers import (
    Claim,
    RecoveryChoice,
    RecoveryOffer,
    offer_recorder,
    recovery_preflight,
)
from bot.service import Rollbot
from bot.store.runs import step_recorder
from bot.telemetry.logs import run_logged
from bot.versions import parse_version

log = logging.getLogger(__name__)


class Recoveries:
    """What the fronts ask once a cancel left production down; every run takes the lock."""

    def __init__(self, rollbot: Rollbot) -> None:
        self._rb = rollbot

    async def offer(self, run_id: int) -> RecoveryOffer | None:
        """The offer a cancelled run left, if it left production down."""
        return await self._rb.recoveries.get(run_id)

    async def choose(self, run_id: int, *, choice: RecoveryChoice, by: str) -> Claim:
        """Take one person's choice for a run cancelled with production down (once; audited)."""
        claim = await self._rb.recoveries.claim(run_id, choice=choice, by=by)
        env = claim.offer.environment if claim.offer else self._rb.runbook.default_environment
        await self._rb.store.audit(
            environment=env, actor=by, kind="recovery" if claim.moved else "refusal",
            run_id=run_id, detail=(f"chose {choice.label} for cancelled run #{run_id}"
                                   if claim.moved else f"{choice.label}: {claim.reason}"))
        return claim

    async def recover(self, offer: RecoveryOffer, *, by: str,
                      observers: Sequence[Observer] = (),
                      on_run: Callable[[Run], None] | None = None) -> RunOutcome:
        """Run the choice taken on ``offer`` as a new run that continues the cancelled one.

        Takes the environment's lock like any rollback. When it changes nothing (lock held,
        pre-flight refused) the choice is offered again.
        """
        choice = offer.choice or RecoveryChoice.RESUME
        env_name, env = self._rb.environment(offer.environment)
        cancelled = await self._rb.store.get_run(offer.run_id)
        resume = choice is RecoveryChoice.RESUME
        target = offer.to_version if resume else offer.from_version
        why = cancelled.reason if cancelled and cancelled.reason else "-"
        ended = ("was interrupted (its rollbot died)" if cancelled is not None
                 and cancelled.status is RunStatus.INTERRUPTED else "was cancelled")
        request = RollbackRequest(
            environment=env_name, procedure=offer.procedure if resume else ProcedureName.PUT_BACK,
            target=parse_version(target), requested_by=by, backup=offer.backup,
            reason=f"{choice.label} after run #{offer.run_id} {ended} (its reason: {why})",
            approved_by=(by,))
        try:
            run_id = await self._rb.store.begin_run(request, owner=self._rb.owner)
        except RollbotError as exc:
            await self._rb.recoveries.release(offer.run_id)
            await self._rb.store.audit(environment=env_name, actor=by, kind="refusal",
                                   run_id=offer.run_id, detail=f"{choice.label}: {exc}")
            raise
        heart = asyncio.create_task(self._rb.heartbeat(run_id))
        try:  # the lock is ours: every way out below ends the run and frees it
            with run_logged(environment=env_name, run_id=run_id):
                await self._rb.recoveries.attach(offer.run_id, run_id)
                await self._rb.store.audit(environment=env_name, actor=by, kind="run",
                                           run_id=run_id, detail=f"{choice.label} for cancelled"
                                                                 f" run #{offer.run_id}")
                return await self._locked_recovery(run_id, env_name, env, request, offer,
                                                   choice, list(observers), on_run)
        except BaseException as exc:
            outcome = RunOutcome(run_id=run_id, status=RunStatus.INTERRUPTED,
                                 host_state="unknown: rollbot stopped during the run",
                                 message=f"rollbot stopped during the run: "
                                         f"{exc or type(exc).__name__}")
            with contextlib.suppress(Exception):
                await asyncio.shield(self._rb.store.finish_run(outcome,
                                                               unless_ended=True))
            raise
        finally:
            heart.cancel()
            self._rb.active.pop(run_id, None)

    async def _locked_recovery(self, run_id: int, env_name: str, env: EnvironmentConfig,
                               request: RollbackRequest, offer: RecoveryOffer,
                               choice: RecoveryChoice, observers: list[Observer],
                               on_run: Callable[[Run], None] | None) -> RunOutcome:
        resume = choice is RecoveryChoice.RESUME
        try:
            async with open_session(env_name, env, store=self._rb.store, actor=request.requested_by,
                                    run_id=run_id) as session:
                async with preflight_deadline(env.timeouts.preflight_s):
                    pre = await recovery_preflight(host=session.host, docker=session.docker,
                                                   env=env, offer=offer, choice=choice)
                if not pre.ok:
                    await self._rb.recoveries.release(offer.run_id)
                    return await self._rb.refuse(run_id, env_name, request, pre.checks,
                                              f"Refused by pre-flight, nothing was changed. "
                                              f"{pre.refusal}", pre.in_compose_file,
                                              str(request.target))
                epoch = int(time.time())
                if resume:
                    current, target = offer.from_version, offer.to_version
                    full = build(offer.procedure, ProcedureInputs(
                        env=env, current=current, target=target, epoch=epoch,
                        backup=pre.backup))
                    procedure = resume_procedure(full, offer)
                else:
                    current, target = pre.in_compose_file, offer.from_version
                    procedure = put_back_procedure(env, offer, epoch=epoch,
                                                   in_compose_file=pre.in_compose_file)
                ctx = StepContext(host=session.host, docker=session.docker, probe=self._rb.probe,
                                  env=env, current=current, target=target,
                                  facts=offer.run_facts(), emit=lambda _line: None)
                await self._rb.store.start_run(run_id, from_version=current, to_version=target,
                                           backup=offer.backup, checks=pre.checks)
                offers = offer_recorder(self._rb.recoveries, environment=env_name,
                                        procedure=request.procedure, ctx=ctx, backup=None,
                                        base=offer)
                run = Run(run_id=run_id, request=request, procedure=procedure, context=ctx,
                          checks=pre.checks,
                          observers=[step_recorder(self._rb.store), offers,
                                     *self._rb.run_observers, *observers])
                self._rb.active[run_id] = run
                self._rb.store.guard(run)
                if on_run is not None:
                    on_run(run)
                outcome = await run.execute()
        except RollbotError as exc:
            if run_id in self._rb.active:
                raise
            await self._rb.recoveries.release(offer.run_id)
            return await self._rb.refuse(run_id, env_name, request, (),
                                      f"Refused before any step, nothing was changed: {exc}",
                                      None, None)
        await self._rb.store.finish_run(outcome)
        await self._rb.store.audit(environment=env_name, actor=request.requested_by, kind="run",
                               run_id=run_id, detail=f"{outcome.status}: {outcome.message}")
        # A resumed rollback is a rollback: verification, report, quarantine. A put-back is not.
        for hook in self._rb.finished_hooks if resume else []:
            try:
                await hook(outcome)
            except Exception:
                log.exception("after-run hook failed for run #%s", run_id)
        return outcome

    async def again_request(self, run_id: int, *, by: str) -> RollbackRequest | None:
        """After an unhealthy put-back: the cancelled rollback asked again (audited), or None."""
        offer = await self._rb.recoveries.get(run_id)
        if offer is None:
            return None
        await self._rb.audit(environment=offer.environment, actor=by, kind="recovery",
                         run_id=run_id, detail=f"roll back to {offer.to_version} again "
                                               "after the put-back: new card")
        return RollbackRequest(environment=offer.environment, procedure=offer.procedure,
                               target=parse_version(offer.to_version), requested_by=by,
                               reason=f"rolling back again after putting back "
                                      f"{offer.from_version} (run #{run_id})",
                               backup=offer.backup)
