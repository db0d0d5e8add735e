"""CI's side door: `POST /hooks/deploy` and `POST /hooks/deploy/allowed`, signed like Slack.

A missing or wrong signature, a timestamp over 5 minutes old, or a replayed request (remembered in
the database, so every rollbot process refuses it) → 401 and an audit entry; a malformed body or an
unknown environment → 400 with the reason, and so is a ``previous_version`` that is not lower
than ``version`` or not what rollbot last saw running or deployed (``bot/sightings.py``).
`allowed` changes nothing, so it needs a valid, fresh signature but no replay check.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiohttp import web

from bot.autorollback.contract import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    BadSignature,
    parse_event,
    parse_query,
    verify,
)
from bot.autorollback.deploys import DeployStore
from bot.autorollback.sightings import Sightings, check_previous_version
from bot.errors import InvalidInput
from bot.service import Rollbot
from handlers.autorollback import AutoRollback

log = logging.getLogger(__name__)


class DeployHooks:
    def __init__(self, *, secret: str | None, rollbot: Rollbot, deploys: DeployStore,
                 auto: AutoRollback) -> None:
        self._secret = secret
        self._rollbot = rollbot
        self._deploys = deploys
        self._auto = auto

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/hooks/deploy", self.deploy),
                web.post("/hooks/deploy/allowed", self.allowed)]

    async def _authentic(self, request: web.Request, body: bytes, *, replay_check: bool
                         ) -> web.Response | None:
        if not self._secret:
            return web.json_response({"error": "ROLLBOT_WEBHOOK_SECRET is not set on rollbot"},
                                     status=503)
        signature = request.headers.get(SIGNATURE_HEADER)
        try:
            verify(self._secret, timestamp=request.headers.get(TIMESTAMP_HEADER),
                   signature=signature, body=body, now=time.time())
        except BadSignature as exc:
            await self._refused(f"deploy hook refused: {exc}")
            return web.json_response({"error": str(exc)}, status=401)
        if replay_check and signature and not await self._deploys.first_sighting(signature):
            await self._refused("deploy hook refused: replayed request")
            return web.json_response({"error": "replayed request"}, status=401)
        return None

    async def deploy(self, request: web.Request) -> web.Response:
        body = await request.read()
        if (refusal := await self._authentic(request, body, replay_check=True)) is not None:
            return refusal
        try:
            event = parse_event(body)
            self._rollbot.environment(event.environment)
        except InvalidInput as exc:
            return web.json_response({"error": str(exc)}, status=400)
        # The same deploy sent again is answered as before, not judged against what it caused.
        seen_before = await self._deploys.find(
            environment=event.environment, version=event.version,
            previous_version=event.previous_version, stage=event.stage.value,
            commit=event.commit)
        note = ""
        if seen_before is None:
            verdict = await check_previous_version(
                sightings=Sightings(self._rollbot.store.pool), deploys=self._deploys,
                environment=event.environment, version=event.version,
                previous=event.previous_version)
            if not verdict.accepted:
                await self._rollbot.store.audit(
                    environment=event.environment, actor=f"ci:{event.actor or '?'}",
                    kind="refusal", detail=f"deploy hook refused ({event.stage.value} "
                                           f"{event.version}): {verdict.reason}")
                return web.json_response({"error": verdict.reason}, status=400)
            note = verdict.reason
        status, payload = await self._auto.on_deploy(
            environment=event.environment, version=event.version,
            previous_version=event.previous_version, stage=event.stage.value,
            commit=event.commit, actor=event.actor, run_url=event.run_url)
        if note:
            payload["previous_version"] = note
        await self._rollbot.store.audit(environment=event.environment,
                                        actor=f"ci:{event.actor or '?'}", kind="deploy",
                                        detail=f"{event.stage.value} {event.version} (from "
                                               f"{event.previous_version}): {payload}")
        return web.json_response(payload, status=status)

    async def allowed(self, request: web.Request) -> web.Response:
        body = await request.read()
        if (refusal := await self._authentic(request, body, replay_check=False)) is not None:
            return refusal
        try:
            query = parse_query(body)
            self._rollbot.environment(query.environment)
        except InvalidInput as exc:
            return web.json_response({"error": str(exc)}, status=400)
        bad = await self._deploys.quarantined(query.environment, query.version)
        if bad is None:
            return web.json_response({"allowed": True})
        answer: dict[str, Any] = {
            "allowed": False, "quarantined_by": bad.by, "at": bad.at.isoformat(),
            "reason": bad.reason,
            "how_to_lift": f"/rollback unquarantine {query.version} --env {query.environment}"}
        return web.json_response(answer, status=409)

    async def _refused(self, detail: str) -> None:
        log.warning("%s", detail)
        try:
            await self._rollbot.store.audit(environment=self._rollbot.runbook.default_environment,
                                            actor="ci", kind="refusal", detail=detail)
        except Exception as exc:
            log.error("AUDIT WRITE FAILED (%s): %s", detail, exc)
