"""CI's side door: `POST /hooks/deploy` and `POST /hooks/deploy/allowed`, signed like Slack.

A missing or wrong signature, a timestamp over 5 minutes old, or a replayed request (remembered in
the database, so every rollbot process refuses it) → 401 and an audit entry; a malformed body or an
unknown environment → 400 with the reason, and so is a ``previous_version`` that is not lower
than ``version`` or not what rollbot last saw running or deployed
(``bot/autorollback/sightings.py``).
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
from bot.autorollback.machine import AutoRollback, Reception
from bot.errors import InvalidInput
from handlers.refusals import RefusalAudit

log = logging.getLogger(__name__)

# What CI reads in the status code; the body says the rest.
_STATUS = {Reception.REFUSED: 400, Reception.REPEATED: 200, Reception.DISABLED: 200,
           Reception.ACCEPTED: 202}


class DeployHooks:
    """The two routes; every decision is the automatic-rollback machine's."""

    def __init__(self, *, secret: str | None, auto: AutoRollback,
                 refusals: RefusalAudit | None = None) -> None:
        self._secret = secret
        self._auto = auto
        # Refusals are audited one by one up to a burst a minute, then counted (a flood of
        # unsigned requests must not fill the database pool); without it, each is written.
        self._refusals = refusals

    async def _refuse(self, detail: str) -> None:
        if self._refusals is not None:
            self._refusals.record(detail)
        else:
            await self._auto.record_refusal(detail)

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
            await self._refuse(f"deploy hook refused: {exc}")
            return web.json_response({"error": str(exc)}, status=401)
        if replay_check and signature and not await self._auto.first_sighting(signature):
            await self._refuse("deploy hook refused: replayed request")
            return web.json_response({"error": "replayed request"}, status=401)
        return None

    async def deploy(self, request: web.Request) -> web.Response:
        body = await request.read()
        if (refusal := await self._authentic(request, body, replay_check=True)) is not None:
            return refusal
        try:
            received = await self._auto.receive(parse_event(body))
        except InvalidInput as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(received.answer, status=_STATUS[received.reception])

    async def allowed(self, request: web.Request) -> web.Response:
        body = await request.read()
        if (refusal := await self._authentic(request, body, replay_check=False)) is not None:
            return refusal
        try:
            query = parse_query(body)
            bad = await self._auto.quarantined(query.environment, query.version)
        except InvalidInput as exc:
            return web.json_response({"error": str(exc)}, status=400)
        if bad is None:
            return web.json_response({"allowed": True})
        answer: dict[str, Any] = {
            "allowed": False, "quarantined_by": bad.by, "at": bad.at.isoformat(),
            "reason": bad.reason,
            "how_to_lift": f"/rollback unquarantine {query.version} --env {query.environment}"}
        return web.json_response(answer, status=409)
