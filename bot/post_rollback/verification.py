"""Post-rollback verification: the spec's Immediate / Extended / Comprehensive tiers.

The schedule is kept in PostgreSQL (``VerificationStore``); ``run_tier`` performs one check over
the same SSH, Docker and HTTP edges as the rollback itself: ``host_checks`` looks at one host,
``database_checks`` at the shared database once (a fleet's checks: ``fleet_checks.py``).
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from bot.config import EnvironmentConfig
from bot.edges.host_facts import running_tag
from bot.errors import HostError, RollbotError
from bot.model import RunRecord, Tier, Verdict, VerificationItem, VerificationResult
from bot.ports import DockerFacts, HttpProbe, RemoteHost
from bot.post_rollback.log_scan import WARNING_LOG_PATTERN, matching
from bot.procedures import commands as cmd
from bot.redaction import redact
from bot.versions import reported_version, same_release

log = logging.getLogger(__name__)

TIERS = (Tier.IMMEDIATE, Tier.EXTENDED, Tier.COMPREHENSIVE)
STALE_CLAIM_S = 600  # a claim older than this belonged to a process that died mid-check
_LOG_TS = re.compile(r"\|\s*(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})")


def tier_for(position: int) -> Tier:
    return TIERS[min(position, len(TIERS) - 1)]


class VerificationStore:
    """Scheduled checks in PostgreSQL: schedule, claim once, record, supersede."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def schedule(self, run: RunRecord, *, after_minutes: tuple[float, ...],
                       start: datetime, baseline: dict[str, int]) -> list[datetime]:
        """Plan the checks of a finished rollback; earlier runs' pending checks are superseded."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE verification_checks SET state = 'superseded' WHERE environment = $1"
                " AND state = 'pending' AND run_id <> $2", run.environment, run.id)
            await conn.execute("UPDATE runs SET baseline = $2::jsonb WHERE id = $1",
                               run.id, json.dumps(baseline))
            due = [start + timedelta(minutes=m) for m in after_minutes]
            for position, when in enumerate(due):
                await conn.execute(
                    "INSERT INTO verification_checks (run_id, environment, tier, position,"
                    " due_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    run.id, run.environment, tier_for(position).value, position, when)
        return due

    async def pending(self, environment: str | None = None) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(
            "SELECT id, run_id, environment, tier, position, due_at FROM verification_checks"
            " WHERE state = 'pending' AND ($1::text IS NULL OR environment = $1)"
            " ORDER BY due_at", environment)
        return [dict(r) for r in rows]

    async def claim(self, check_id: int, *, owner: str) -> dict[str, Any] | None:
        """Take one due check for this process; None if another took it or it was superseded."""
        row = await self._pool.fetchrow(
            "UPDATE verification_checks SET state = 'running', claimed_by = $2,"
            " claimed_at = now() WHERE id = (SELECT id FROM verification_checks WHERE id = $1"
            " AND (state = 'pending' OR (state = 'running' AND claimed_at < now() -"
            " make_interval(secs => $3))) AND due_at <= now() FOR UPDATE SKIP LOCKED)"
            " RETURNING id, run_id, environment, tier, position, due_at, now() AS claimed",
            check_id, owner, STALE_CLAIM_S)
        return dict(row) if row else None

    async def record(self, check_id: int, result: VerificationResult) -> None:
        await self._pool.execute(
            "UPDATE verification_checks SET state = 'done', ran_at = $2, late_s = $3, ok = $4,"
            " items = $5::jsonb WHERE id = $1",
            check_id, result.ran_at, result.late_s, result.ok,
            json.dumps([asdict(i) for i in result.items]))

    async def release(self, check_id: int) -> None:
        """Give a claimed check back (this process could not run it)."""
        await self._pool.execute(
            "UPDATE verification_checks SET state = 'pending', claimed_by = NULL"
            " WHERE id = $1 AND state = 'running'", check_id)

    async def results(self, run_id: int) -> list[VerificationResult]:
        rows = await self._pool.fetch(
            "SELECT * FROM verification_checks WHERE run_id = $1 AND state = 'done'"
            " ORDER BY position", run_id)
        return [VerificationResult(
            run_id=r["run_id"], tier=Tier(r["tier"]), due_at=r["due_at"], ran_at=r["ran_at"],
            late_s=float(r["late_s"] or 0),
            items=tuple(_item(i) for i in json.loads(r["items"])))
            for r in rows]

    async def baseline(self, run_id: int) -> dict[str, int]:
        raw = await self._pool.fetchval("SELECT baseline FROM runs WHERE id = $1", run_id)
        return {str(k): int(v) for k, v in json.loads(raw or "{}").items()}

    async def record_verdict(self, *, run_id: int, check_id: int, tier: Tier, verdict: str,
                             by: str) -> bool:
        """Keep a Healthy/Regressed answer, with who and when; False for an unknown run or check.

        ``check_id`` 0 is an on-demand check outside the schedule; a scheduled check also keeps
        its latest answer in its own row.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            if check_id > 0:
                known = await conn.fetchval(
                    "UPDATE verification_checks SET verdict = $3, verdict_by = $4,"
                    " verdict_at = now() WHERE id = $1 AND run_id = $2 RETURNING true",
                    check_id, run_id, verdict, by)
            else:
                known = await conn.fetchval("SELECT true FROM runs WHERE id = $1", run_id)
            if not known:
                return False
            await conn.execute(
                "INSERT INTO verification_verdicts (run_id, check_id, tier, verdict, given_by)"
                " VALUES ($1, $2, $3, $4, $5)",
                run_id, check_id or None, tier.value, verdict, by)
        return True

    async def verdicts(self, run_id: int) -> list[Verdict]:
        rows = await self._pool.fetch(
            "SELECT v.*, c.due_at FROM verification_verdicts v LEFT JOIN verification_checks c"
            " ON c.id = v.check_id WHERE v.run_id = $1 ORDER BY v.given_at, v.id", run_id)
        return [Verdict(run_id=r["run_id"], tier=Tier(r["tier"]), verdict=r["verdict"],
                        by=r["given_by"], at=r["given_at"], check_due_at=r["due_at"])
                for r in rows]


async def row_counts(host: RemoteHost, env: EnvironmentConfig) -> dict[str, int]:
    """``verify_tables`` row counts, or {} when the runbook names none."""
    if env.database is None or not env.database.verify_tables:
        return {}
    result = await host.run(cmd.row_counts(env.database), timeout=60)
    counts = {}
    for line in result.output.splitlines():
        name, sep, n = line.partition("|")
        if sep and n.strip().isdigit():
            counts[name.strip()] = int(n)
    return counts


class _Items:
    """Collects check items, timing each, turning edge errors into failed items."""

    def __init__(self) -> None:
        self.items: list[VerificationItem] = []

    async def add(self, name: str, check: Any) -> None:
        started = time.monotonic()
        try:
            ok, detail = await check()
        except RollbotError as exc:
            ok, detail = False, str(exc)
        # Details quote log lines and command output: a logged DSN must not reach Slack.
        self.items.append(VerificationItem(name=name, ok=ok, detail=redact(detail),
                                           duration_s=time.monotonic() - started))


async def run_tier(*, tier: Tier, run: RunRecord, env: EnvironmentConfig, host: RemoteHost,
                   docker: DockerFacts, probe: HttpProbe, baseline: dict[str, int],
                   since: datetime) -> list[VerificationItem]:
    """Run one tier of the spec's verification on a one-host environment; each item says what
    it saw."""
    on_host = await host_checks(tier=tier, run=run, env=env, host=host, docker=docker,
                                probe=probe, since=since)
    return with_database_checks(on_host, await database_checks(
        tier=tier, env=env, host=host, baseline=baseline))


def with_database_checks(on_hosts: list[VerificationItem],
                         database: list[VerificationItem]) -> list[VerificationItem]:
    """The database's items in the spec's order: right after the error-log scan."""
    cut = next((n + 1 for n, i in enumerate(on_hosts) if i.name == "Error logs"), len(on_hosts))
    return [*on_hosts[:cut], *database, *on_hosts[cut:]]


async def database_checks(*, tier: Tier, env: EnvironmentConfig, host: RemoteHost,
                          baseline: dict[str, int]) -> list[VerificationItem]:
    """What a tier checks of the shared database: once per environment, on its database host."""
    items = _Items()
    if tier in (Tier.EXTENDED, Tier.COMPREHENSIVE):
        async def counts() -> tuple[bool, str]:
            return judge_row_counts(baseline, await row_counts(host, env),
                                    max_loss_ratio=env.max_row_loss_ratio)
        await items.add("Row counts", counts)
    return items.items


async def host_checks(*, tier: Tier, run: RunRecord, env: EnvironmentConfig,
                      host: RemoteHost | None, docker: DockerFacts | None, probe: HttpProbe,
                      since: datetime, unreachable: str = "") -> list[VerificationItem]:
    """What a tier checks of one host: its containers, URLs and logs (``env`` is the host's).

    ``host``/``docker`` None: the host could not be reached over SSH (``unreachable`` says why);
    its URLs are still checked and every check that needs SSH fails with that reason.
    """
    items = _Items()
    target = run.to_version or ""

    def over_ssh() -> tuple[RemoteHost, DockerFacts]:
        if host is None or docker is None:
            raise HostError(f"not reached over SSH: {unreachable or 'no session'}")
        return host, docker

    async def services() -> tuple[bool, str]:
        containers = await over_ssh()[1].compose_containers(env.compose)
        down = [f"{c.service} ({c.status})" for c in containers if not c.up]
        if not containers:
            return False, "no containers of the compose project"
        if down:
            return False, "not Up: " + ", ".join(down)
        tag = running_tag(containers, env)
        return tag == target, f"all {len(containers)} services Up; {env.service} runs {tag}"

    async def health() -> tuple[bool, str]:
        status, body = await probe.fetch(env.health_url, timeout_s=10)
        return status == 200, f"{env.health_url} → {status or body[:80]}"

    async def version() -> tuple[bool, str]:
        status, body = await probe.fetch(env.version_url, timeout_s=10)
        if status != 200:
            return False, f"HTTP {status or body[:60]} (expected {target})"
        seen = reported_version(body, env.version_json_key)
        shown = seen[:40] or "no version"
        return same_release(seen, target), f"reports {shown} (expected {target})"

    async def smoke() -> tuple[bool, str]:
        answers = [(u, (await probe.fetch(u, timeout_s=10))[0]) for u in env.smoke_urls]
        bad = [f"{u} → {s}" for u, s in answers if s is None or not 200 <= s < 300]
        return not bad, "; ".join(bad) or f"{len(answers)} URL(s) answered 2xx"

    await items.add("Services Up", services)
    await items.add("Health", health)
    await items.add("Version", version)
    if env.smoke_urls:
        await items.add("Smoke URLs", smoke)
    compose = cmd.compose(env, "logs", "--no-color", "--timestamps")
    since_s = since.strftime("%Y-%m-%dT%H:%M:%S")

    async def log_lines() -> list[str]:
        result = await over_ssh()[0].run(compose, timeout=120, check=False)
        lines = []
        for line in result.output.splitlines():
            m = _LOG_TS.search(line)
            if m is None or m.group(1) >= since_s:
                lines.append(line)
        return lines

    error_re = re.compile(env.error_log_pattern)

    async def errors() -> tuple[bool, str]:
        found = matching(await log_lines(), error_re)
        return not found, (f"{len(found)} error line(s) since the rollback, e.g. "
                           f"{found[-1][-160:]}" if found else "no error lines since the rollback")

    await items.add("Error logs", errors)
    if tier in (Tier.EXTENDED, Tier.COMPREHENSIVE):
        async def warnings() -> tuple[bool, str]:
            return judge_warnings(matching(await log_lines(), WARNING_LOG_PATTERN),
                                  max_lines=env.max_warning_lines)

        await items.add("Warnings", warnings)
    if tier is Tier.COMPREHENSIVE:
        if env.smoke_command:
            smoke_cmd = cmd.in_compose_dir(env, env.smoke_command)

            async def smoke_tests() -> tuple[bool, str]:
                result = await over_ssh()[0].run(smoke_cmd, timeout=900, check=False)
                tail = result.output.strip().splitlines()[-1:] or [""]
                return result.exit_status == 0, f"exit {result.exit_status}: {tail[0][:160]}"
            await items.add("Smoke tests", smoke_tests)
        for name, url in env.service_health_urls.items():
            async def service_health(url: str = url) -> tuple[bool, str]:
                status, body = await probe.fetch(url, timeout_s=10)
                return status == 200, f"{url} → {status or body[:80]}"
            await items.add(f"{name} health", service_health)

        async def last_1000() -> tuple[bool, str]:
            result = await over_ssh()[0].run(
                cmd.compose(env, "logs", "--no-color", "--tail=1000"), timeout=120, check=False)
            found = matching(result.output.splitlines(), error_re)
            return not found, f"{len(found)} error line(s) in the last 1000 log lines"
        await items.add("Last 1000 log lines", last_1000)
    return items.items


def judge_row_counts(baseline: dict[str, int], now: dict[str, int], *,
                     max_loss_ratio: float) -> tuple[bool, str]:
    """``verify_tables`` counts against right after the rollback: a loss over the ratio fails."""
    text = ", ".join(f"{t} {n}" for t, n in now.items()) or "no verify_tables"
    lost: list[str] = []
    noted: list[str] = []
    for table, before in baseline.items():
        if table not in now:
            lost.append(f"{table}: {before} → not counted")
            continue
        gone = before - now[table]
        if gone <= 0:
            continue
        what = f"{table} {before} → {now[table]} (lost {gone}, {_percent(gone / before)})"
        (lost if gone / before > max_loss_ratio else noted).append(what)
    limit = f"more than {_percent(max_loss_ratio)} of a table's rows since the rollback"
    if lost:
        return False, f"rows lost, {limit}: " + "; ".join(lost) + f". Now: {text}"
    if noted:
        return True, f"{text}; small loss within {_percent(max_loss_ratio)}: " + "; ".join(noted)
    return True, text


def judge_warnings(found: list[str], *, max_lines: int) -> tuple[bool, str]:
    """More warning lines since the rollback than ``max_warning_lines`` fail the check."""
    text = f"{len(found)} warning line(s) since the rollback (at most {max_lines} allowed)"
    if len(found) > max_lines:
        return False, f"{text}, e.g. {found[-1][-160:]}"
    return True, text


def _percent(ratio: float) -> str:
    return f"{ratio * 100:.3g}%"


def _item(stored: dict[str, Any]) -> VerificationItem:
    """A stored item (JSON has lists; rows from before fleets have no ``hosts``)."""
    return VerificationItem(**{**stored, "hosts": tuple(stored.get("hosts", ()))})


def late_by(due: datetime, now: datetime | None = None) -> float:
    return max(0.0, ((now or datetime.now(UTC)) - due).total_seconds())
