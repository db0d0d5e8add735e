"""Put back what ran before: after a cancel left production down, restart the previous version."""

from __future__ import annotations

from bot.config import EnvironmentConfig
from bot.edges.host_facts import running_tag
from bot.errors import HealthCheckFailed, HostError
from bot.model import ProcedureName
from bot.procedures import commands as cmd
from bot.procedures.base import Procedure, ProcedureTitle, Step, StepContext
from bot.procedures.compose_file import find_image_line
from bot.procedures.steps import COMMAND_S, START
from bot.recovery.offers import PUT_BACK_COMPOSE, RecoveryOffer

TITLE = ProcedureTitle(name=ProcedureName.PUT_BACK, words="put back what ran before")


def put_back_procedure(env: EnvironmentConfig, offer: RecoveryOffer, *, epoch: int,
                       in_compose_file: str) -> Procedure:
    """Restore the kept compose file copy, start, confirm the services, check health."""
    old, svc = offer.from_version, env.service
    kept = offer.run_facts().compose_backup
    copy_path = f"{env.compose.file}.rollbot-{epoch}.bak"
    switched = in_compose_file != old

    async def put_back_file(ctx: StepContext) -> str:
        current = await ctx.host.read_file(env.compose.file)
        now_names = find_image_line(current, service=svc, image=env.image).tag
        if now_names == old:
            ctx.emit(f"{env.compose.file} already names {env.image}:{old}")
            return f"compose file already names {old}: nothing to put back"
        text = await ctx.host.read_file(kept)
        kept_names = find_image_line(text, service=svc, image=env.image).tag
        if kept_names != old:
            raise HostError(f"the kept copy {kept} names {kept_names}, not {old}")
        ctx.emit(f"{env.compose.file}: image {env.image}:{now_names} -> {env.image}:{old} "
                 f"(the copy {kept})")
        await ctx.host.write_file_atomic(env.compose.file, text, backup_path=copy_path)
        ctx.emit(f"the file as it was kept as {copy_path}")
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
        if running_tag(containers, env) != old:
            raise HealthCheckFailed(f"{svc} does not run {env.image}:{old}")
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
                 shows=(f"sftp: copy {kept} over {env.compose.file} (the current file kept as "
                        f"{copy_path}; temp file, then rename)" if switched else
                        f"sftp: read {env.compose.file}: it must name {env.image}:{old}",),
                 leaves=f"services STOPPED; compose file names {old}", timeout_s=COMMAND_S,
                 destructive=switched,
                 if_failed=f"the compose file is unchanged; the copy is {kept or '?'}."),
            Step(key=START, title="Start services", action=start, shows=(up,),
                 leaves=f"services started on {old}, not yet confirmed", timeout_s=t_up + 5,
                 destructive=True,
                 if_failed="services may be stopped: check `docker-compose ps` on the host."),
            Step(key="confirm_services", title="Confirm all services are up", action=confirm,
                 shows=(f"docker ps (compose project {env.compose.project_name}): every "
                        f"service running {env.image}:{old}",),
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
