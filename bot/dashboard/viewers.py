"""Who opened the home tab, and the claim that makes each publish happen once, debounced.

The claims are conditional UPDATEs on one table, so they hold across replicas: a user is
published to at most once every ``DEBOUNCE_S``, by one replica, and only while they opened the
tab within the last ``RECENT_S``.
"""

from __future__ import annotations

import asyncpg

# At most one publish per user every 2 s as Slack receives them: the claim is taken before the
# state is read and rendered, so it keeps a quarter second more for that.
DEBOUNCE_S = 2.25
RECENT_S = 3600.0


class HomeViewers:
    def __init__(self, pool: asyncpg.Pool, *, debounce_s: float = DEBOUNCE_S,
                 recent_s: float = RECENT_S) -> None:
        self._pool = pool
        self._debounce = debounce_s
        self._recent = recent_s

    async def opened(self, user: str, *, fingerprint: str) -> bool:
        """The user opened the tab; True when this replica should publish to them now.

        Not when it was published to them within the debounce: the view they see is that fresh,
        and a change since then is caught by the next claim.
        """
        return bool(await self._pool.fetchval(
            "INSERT INTO home_viewers AS v (user_id, opened_at, published_at, fingerprint)"
            " VALUES ($1, now(), now(), $2) ON CONFLICT (user_id) DO UPDATE SET"
            " opened_at = now(),"
            " fingerprint = CASE WHEN v.published_at IS NULL OR v.published_at <= now() -"
            "   make_interval(secs => $3) THEN EXCLUDED.fingerprint ELSE v.fingerprint END,"
            " published_at = CASE WHEN v.published_at IS NULL OR v.published_at <= now() -"
            "   make_interval(secs => $3) THEN now() ELSE v.published_at END"
            " RETURNING v.published_at = now()", user, fingerprint, self._debounce))

    async def anyone_recent(self) -> bool:
        """Whether anyone opened the tab within the last hour (else there is nothing to poll)."""
        return bool(await self._pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM home_viewers"
            " WHERE opened_at > now() - make_interval(secs => $1))", self._recent))

    async def claim_stale(self, fingerprint: str) -> list[str]:
        """The recent viewers whose view is older than ``fingerprint``, claimed for publishing."""
        rows = await self._pool.fetch(
            "UPDATE home_viewers SET published_at = now(), fingerprint = $1"
            " WHERE opened_at > now() - make_interval(secs => $3)"
            " AND fingerprint IS DISTINCT FROM $1"
            " AND (published_at IS NULL OR published_at <= now() - make_interval(secs => $2))"
            " RETURNING user_id", fingerprint, self._debounce, self._recent)
        return sorted(str(r["user_id"]) for r in rows)

    async def failed(self, user: str) -> None:
        """A publish did not reach Slack: the next claim (after the debounce) tries again."""
        await self._pool.execute("UPDATE home_viewers SET fingerprint = NULL WHERE user_id = $1",
                                 user)
