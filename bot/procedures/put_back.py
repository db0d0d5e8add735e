"""Put back what ran before: after a cancel left production down, restart the previous version."""

from __future__ import annotations

from bot.config import EnvironmentConfig
from bot.edges.host_facts import running_tag
from bot.errors import HealthCheckFailed, HostError
from bot.model import ProcedureName
from bot.procedures import commands as cmd
from bot.procedures.base import Procedure, ProcedureTitle, Step, StepContext
from bot.procedures.release_files import (
    env_file_path,
    parse_release,
    read_env_text,
    read_release,
)
from bot.procedures.steps import COMMAND_S, START, services_named
from bot.recovery.offers import PUT_BACK_COMPOSE, RecoveryOffer

TITLE = ProcedureTitle(name=ProcedureName.PUT_BACK, words="put back what ran before")


def put_back_procedure(env: EnvironmentConfig, offer: RecoveryOffer, *, epoch: int,
                       in_compose_file: str) -> Procedure:
    """Restore the kept compose file (and .env) copies, start, confirm, check health."""
    old, svc = offer.from_version, services_named(env)
    facts = offer.run_facts()
    kept = facts.compose_backup
    kept_env = facts.env_file_backup
    copy_path = f"{env.compose.file}.rollbot-{epoch}.bak"
    env_file = env_file_path(env.compose)
    env_copy_path = f"{env_file}.rollbot-{epoch}.bak"
    switched = in_compose_file != old
    kept_names = " and ".join(k for k in (kept, kept_env) if k) or "?"

    async def put_back_file(ctx: StepContext) -> str:
        now = await read_release(ctx.host, env)
        if now.names(old):
            ctx.emit(f"{env.compose.file} already names {old} for {svc}")
            return f"compose file already names {old}: nothing to put back"
        compose_text = await ctx.host.read_file(kept) if kept else now.compose_text
        env_text = await read_env_text(ctx.host, kept_env) if kept_env else now.env_text
        copies = parse_release(env, compose_text=compose_text, env_text=env_text,
                               env_file=now.env_file)
        if not copies.names(old):
            raise HostError(f"the kept copies {kept_names} name {copies.describe()}, not {old}")
        ctx.emit(f"{svc}: {now.describe()} -> {old} (the copies {kept_names})")
        if kept and compose_text != now.compose_text:
            await ctx.host.write_file_atomic(env.compose.file, compose_text,
                                             backup_path=copy_path)
            ctx.emit(f"the compose file as it was kept as {copy_path}")
        if kept_env and env_text is not None and env_text != now.env_text:
            await ctx.host.write_file_atomic(env_file, env_text, backup_path=env_copy_path)
            ctx.emit(f"{env_file} as it was kept as {env_copy_path}")
        return f"compose file names {old} again"

    up = cmd.compose(env, "up", "-d")
    t_up = env.timeouts.compose_up_s

    async def start(ctx: StepContext) -> str:
        await ctx.host.run(up, timeout=t_up, on_line=ctx.emit)
        return f"services started on {old}"

    async def confirm(ctx: StepContext) -> str:
        containers = await ctx.docker.compose_containers(env.compose)
        for c in containers:
            ctx.emit(f"{c.name:<28} {c.service:<12} {c.image:<28} {c.status}")
        down = [c.name for c in containers if not c.up]
        if not containers or down:
            raise HealthCheckFailed(f"not running: {', '.join(down) or 'no containers'}")
        wrong = [f"{s} does not run {image}:{old}" for s, image in env.services.items()
                 if running_tag(containers, env, s) != old]
        if wrong:
            raise HealthCheckFailed("; ".join(wrong))
        return f"all {len(containers)} services Up on {old}"

    deadline = env.timeouts.emergency_health_s
    interval = env.timeouts.health_interval_s

    async def health(ctx: StepContext) -> str:
        poll = await ctx.probe.wait_healthy(env.health_url, deadline_s=deadline,
                                            interval_s=interval)
        answer = f"HTTP {poll.status}" if poll.status is not None else poll.detail
        ctx.emit(f"GET {env.health_url} -> {answer} after {poll.elapsed_s:.1f} s "
                 f"({poll.attempts} tries)")
        if not poll.ok:
            raise HealthCheckFailed(f"{env.health_url} still answered {answer} after "
                                    f"{poll.elapsed_s:.0f} s")
        return f"healthy after {poll.elapsed_s:.1f} s"

    back_up = f"{svc} is back up on {old} (all services running)"
    return Procedure(
        name=TITLE.name, title=f"{TITLE.title} ({old})",
        initial_state=offer.host_state,
        steps=(
            Step(key=PUT_BACK_COMPOSE,
                 title=(f"Put back the compose file copy ({old})" if switched
                        else f"Check the compose file names {old}"),
                 action=put_back_file,
                 shows=(_copy_back_shows(kept, kept_env, env.compose.file, env_file,
                                         copy_path, env_copy_path) if switched else
                        f"sftp: read {env.compose.file}: it must name {env.image}:{old}",),
                 leaves=f"services STOPPED; compose file names {old}", timeout_s=COMMAND_S,
                 destructive=switched,
                 if_failed=f"the compose file is unchanged; the copy is {kept_names}."),
            Step(key=START, title="Start services", action=start, shows=(up,),
                 leaves=f"services started on {old}, not yet confirmed", timeout_s=t_up + 5,
                 destructive=True,
                 if_failed="services may be stopped: check `docker-compose ps` on the host."),
            Step(key="confirm_services", title="Confirm all services are up", action=confirm,
                 shows=(f"docker ps ({env.compose.described}): every service running, "
                        f"{', '.join(f'{i}:{old}' for i in env.services.values())}",),
                 leaves=f"{back_up}, health not yet checked", timeout_s=COMMAND_S,
                 failed_state=f"services started on {old}, but not all of them are up",
                 if_failed="check `docker-compose ps` and the logs."),
            Step(key="wait_healthy", title="Check health", action=health,
                 shows=(f"GET {env.health_url} every {interval:g} s until 2xx (at most "
                        f"{deadline:.0f} s)",),
                 leaves=f"{svc} is back on {old}, up and healthy", timeout_s=deadline + 10,
                 failed_state=f"{back_up} but NOT healthy",
                 if_failed=f"roll back to {offer.to_version} again (a fresh pre-flight), or "
                           "fix forward."),
        ),
        succeeded_state=f"{svc} is back on {old}, up and healthy",
        succeeded_message=f"Put back {old} after run #{offer.run_id} was cancelled: {svc} is "
                          f"back on {old}, up and healthy.",
    )


def _copy_back_shows(kept: str, kept_env: str, compose_file: str, env_file: str,
                     copy_path: str, env_copy_path: str) -> str:
    copies = [f"{kept} over {compose_file} (the current file kept as {copy_path})"] if kept else []
    if kept_env:
        copies.append(f"{kept_env} over {env_file} (the current file kept as {env_copy_path})")
    said = " and ".join(copies) or "nothing (no copy was kept)"
    return f"sftp: copy {said}; temp file, then rename"
