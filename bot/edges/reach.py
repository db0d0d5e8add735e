"""Sessions on every host of an environment at once, each host's failure to connect kept apart.

The checks after a rollback and the watch after a deploy look at every fleet host: one SSH
connection each, opened in parallel. A host that cannot be reached is named with why, so a check
can say "web-3: not reached over SSH" while it still looks at the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from bot.config import EnvironmentConfig
from bot.edges.session import HostSession, open_session
from bot.errors import HostError, RollbotError
from bot.store.runs import Store


@dataclass(frozen=True)
class Reached:
    """One host of the environment: its merged settings, and its session or why there is none."""

    name: str
    env: EnvironmentConfig
    session: HostSession | None
    problem: str = ""   # why it could not be reached ("" when session is set)
    error: RollbotError | None = None


@asynccontextmanager
async def open_sessions(env_name: str, env: EnvironmentConfig, *, store: Store, actor: str,
                        run_id: int | None, strict: bool) -> AsyncIterator[list[Reached]]:
    """A session on every host of ``env`` (in parallel), all closed on exit.

    ``strict``: the first host that cannot be reached raises (nothing is half-watched);
    otherwise it is returned without a session, with the reason.
    """
    async with AsyncExitStack() as stack:
        async def reach(name: str, host_env: EnvironmentConfig) -> Reached:
            try:
                session = await stack.enter_async_context(open_session(
                    env_name, host_env, store=store, actor=actor, run_id=run_id))
            except RollbotError as exc:
                return Reached(name=name, env=host_env, session=None, problem=str(exc),
                               error=exc)
            except Exception as exc:  # untranslated: still this host's alone (and no leak)
                error = HostError(f"cannot reach {host_env.ssh.host}: "
                                  f"{type(exc).__name__}: {exc}")
                return Reached(name=name, env=host_env, session=None, problem=str(error),
                               error=error)
            return Reached(name=name, env=host_env, session=session)

        reached = list(await asyncio.gather(*(reach(n, e) for n, e in env.members)))
        failed = [r for r in reached if r.error is not None]
        if failed and (strict or len(failed) == len(reached)):
            # Nothing could be looked at (or the caller needs every host): as one host today.
            first = failed[0]
            assert first.error is not None
            if not env.hosts:
                raise first.error  # one host: the error as a one-host session raises it
            raise HostError(f"{first.name}: {first.problem}") from first.error
        yield reached
