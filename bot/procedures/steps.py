"""The steps the procedures share: check, stop, switch, start, wait for health, confirm."""

from __future__ import annotations

from bot.config import DatabaseConfig, EnvironmentConfig
from bot.edges.host_facts import running_tag, running_text
from bot.errors import ConfigError, HealthCheckFailed, HostError
from bot.model import RunStatus
from bot.procedures import commands as cmd
from bot.procedures.base import ProcedureInputs, Step, StepAction, StepContext
from bot.procedures.release_files import env_file_path, read_release, switch_release
from bot.versions import reported_version, same_release

# Step keys that bot/recovery/offers.py reasons about (what a cancelled run left behind).
STOP, SWITCH, START = "stop_services", "switch_version", "start_services"

COMMAND_S = 60.0
ADVICE_DOWN = ("services may be stopped. Run `rollback --emergency` to force the known-good "
               "version up, or fix by hand (see the output).")
_ADVICE_HEALTH = ("the new version started but is not healthy. Check `docker-compose logs`; if it "
                  "stays down, run `rollback --emergency`, and `rollback --restore` if the data is "
                  "damaged.")


def run_command(command: str, *, timeout: float, summary: str = "") -> StepAction:
    """A step action that runs one command; its summary, else the output's last line."""
    async def action(ctx: StepContext) -> str:
        result = await ctx.host.run(command, timeout=timeout, on_line=ctx.emit)
        if summary:
            return summary
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        return lines[-1][:200] if lines else "done"
    return action


def database(i: ProcedureInputs) -> DatabaseConfig:
    """The environment's database; a procedure that needs one refuses to build without it."""
    if i.env.database is None:
        raise ConfigError("this environment has no [database] section in the runbook")
    return i.env.database


def services_named(env: EnvironmentConfig) -> str:
    """"api", or "api and worker" for a release of several services."""
    names = list(env.services) or [env.service]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _images(env: EnvironmentConfig) -> str:
    return ", ".join(env.services.values()) or env.image


def check_current(i: ProcedureInputs) -> Step:
    env = i.env

    # The spec's `docker-compose ps` and `docker images | grep` as Docker facts: the same answer
    # without starting docker-compose (a Python program: ~0.3 s per call) on the host.
    async def action(ctx: StepContext) -> str:
        containers = await ctx.docker.compose_containers(env.compose)
        for c in containers:
            ctx.emit(f"{c.name:<28} {c.service:<12} {c.image:<28} {c.status}")
        missing = []
        for image in env.services.values():
            tags = await ctx.docker.image_tags(image)
            for t in tags[:5]:
                ctx.emit(f"{t.repository}  {t.tag:<12} "
                         f"{t.image_id.removeprefix('sha256:')[:12]}  "
                         f"created {t.created:%Y-%m-%d %H:%M:%S} UTC")
            if not any(t.tag == ctx.target for t in tags):
                missing.append(f"{image}:{ctx.target}")
        if missing:
            raise HostError(f"image {', '.join(missing)} is no longer on the host")
        if len(env.services) == 1:
            running = running_tag(containers, env) or "nothing"
            return f"{env.service} runs {running}; {env.image}:{ctx.target} is present"
        present = ", ".join(f"{image}:{ctx.target}" for image in env.services.values())
        return f"{running_text(containers, env)}; {present} are present"

    return Step(
        key="check_current", title="Check current version", action=action,
        shows=(f"docker ps: containers of {env.compose.described} (Docker API)",
               f"docker images {_images(env)}: tags and creation times (Docker API)"),
        leaves=f"untouched: {services_named(env)} still {_run(env)} {i.current}",
        timeout_s=COMMAND_S,
    )


def _run(env: EnvironmentConfig) -> str:
    return "runs" if len(env.services) <= 1 else "run"


def stop(i: ProcedureInputs, leaves: str) -> Step:
    t = i.env.timeouts.compose_down_s
    c = cmd.compose(i.env, "down")
    return Step(key=STOP, title="Stop services",
                action=run_command(c, timeout=t, summary="services stopped"),
                shows=(c,), leaves=leaves, timeout_s=t + 5, destructive=True,
                if_failed=ADVICE_DOWN)


def switch(i: ProcedureInputs, leaves: str) -> Step:
    env = i.env
    backup_path = f"{env.compose.file}.rollbot-{i.epoch}.bak"
    env_file = env_file_path(env.compose)
    env_backup = f"{env_file}.rollbot-{i.epoch}.bak"

    # One edit of each file that names a tag: the compose file for tags written out, .env for
    # ${VAR} tags (the compose line is left alone). Each is written whole to a temp file and
    # renamed, after a copy of it is kept.
    async def action(ctx: StepContext) -> str:
        release = await read_release(ctx.host, env)
        change = switch_release(release, ctx.target)
        for line in change.changes:
            ctx.emit(line)
        said = []
        if change.compose_text is not None:
            await ctx.host.write_file_atomic(env.compose.file, change.compose_text,
                                             backup_path=backup_path)
            ctx.facts.compose_backup = backup_path
            ctx.emit(f"previous file kept as {backup_path}")
            said.append("compose file")
        if change.env_text is not None:
            await ctx.host.write_file_atomic(env_file, change.env_text, backup_path=env_backup)
            ctx.facts.env_file_backup = env_backup
            ctx.emit(f"previous {env_file} kept as {env_backup}")
            said.append(env_file)
        if not said:
            return f"compose file already names {ctx.target}"
        if len(env.services) == 1 and said == ["compose file"]:
            return f"compose file now names {env.image}:{ctx.target}"
        return f"{' and '.join(said)} now name {services_named(env)} {ctx.target}"

    what = ", ".join(f"services.{s}.image to {image}:{i.target}"
                     for s, image in env.services.items())
    title = (f"Switch compose file to {i.target}" if len(env.services) <= 1
             else f"Switch {services_named(env)} to {i.target}")
    return Step(
        key=SWITCH, title=title, action=action,
        shows=(f"sftp: in {env.compose.file} set {what} (copy kept as {backup_path}; written to "
               f"a temp file, then renamed); a tag written as ${{VAR}} is set in {env_file} "
               f"instead (copy kept as {env_backup}), the compose line left as is",),
        leaves=leaves, timeout_s=COMMAND_S, destructive=True,
        if_failed=f"each file is unchanged or fully changed (never partial); the copies are "
                  f"{backup_path} and, for a ${{VAR}} tag, {env_backup}. {ADVICE_DOWN}",
    )


def start(i: ProcedureInputs) -> Step:
    t = i.env.timeouts.compose_up_s
    c = cmd.compose(i.env, "up", "-d")
    return Step(key=START, title="Start services",
                action=run_command(c, timeout=t, summary=f"services started on {i.target}"),
                shows=(c,), leaves=f"services started on {i.target}, health not yet confirmed",
                timeout_s=t + 5, destructive=True, if_failed=ADVICE_DOWN)


def wait_healthy(i: ProcedureInputs, *, deadline_s: float, title: str = "Wait for health",
                 failure_status: RunStatus = RunStatus.FAILED, if_failed: str = _ADVICE_HEALTH
                 ) -> Step:
    env = i.env
    interval = env.timeouts.health_interval_s

    async def action(ctx: StepContext) -> str:
        poll = await ctx.probe.wait_healthy(env.health_url, deadline_s=deadline_s,
                                            interval_s=interval)
        answer = f"HTTP {poll.status}" if poll.status is not None else poll.detail
        if not poll.ok:
            raise HealthCheckFailed(
                f"{env.health_url} still answered {answer} after {poll.elapsed_s:.0f} s "
                f"({poll.attempts} tries)"
            )
        ctx.emit(f"GET {env.health_url} -> {answer} after {poll.elapsed_s:.1f} s "
                 f"({poll.attempts} tries)")
        return f"healthy after {poll.elapsed_s:.1f} s"

    return Step(
        key="wait_healthy", title=title, action=action,
        shows=(f"GET {env.health_url} every {interval:g} s until 2xx "
               f"(at most {deadline_s:.0f} s)",),
        leaves=f"{env.service} runs {i.target} and answers healthy", timeout_s=deadline_s + 10,
        failure_status=failure_status, if_failed=if_failed,
        failed_state=f"services started on {i.target} but NOT healthy",
    )


def _verify_version(i: ProcedureInputs) -> Step:
    env = i.env

    async def action(ctx: StepContext) -> str:
        status, body = await ctx.probe.fetch(env.version_url, timeout_s=10)
        if status is None or not 200 <= status < 300:
            raise HealthCheckFailed(f"{env.version_url} answered {status or body}")
        seen = reported_version(body, env.version_json_key)
        ctx.emit(f"GET {env.version_url} -> {seen[:80]}")
        if not same_release(seen, ctx.target):
            raise HealthCheckFailed(
                f"{env.version_url} reports '{seen[:60] or body.strip()[:60]}', "
                f"expected {ctx.target}"
            )
        return f"version endpoint reports {seen}"

    return Step(
        key="verify_version", title="Check service version", action=action,
        shows=(f"GET {env.version_url} must report {i.target}",),
        leaves=f"{env.service} runs {i.target}, healthy, version confirmed", timeout_s=20,
        failed_state=f"services started and healthy, but not reporting {i.target}",
        if_failed="the host serves another version than expected; check which image runs.",
    )


def _confirm_services(i: ProcedureInputs) -> Step:
    env = i.env

    async def action(ctx: StepContext) -> str:
        containers = await ctx.docker.compose_containers(env.compose)
        for c in containers:
            ctx.emit(f"{c.name:<28} {c.service:<12} {c.image:<28} {c.status}")
        down = [c.name for c in containers if not c.up]
        if not containers:
            raise HealthCheckFailed(f"no containers of {env.compose.described} are running")
        if down:
            raise HealthCheckFailed(f"not running: {', '.join(down)}")
        wrong = [f"{s} does not run {image}:{ctx.target}" for s, image in env.services.items()
                 if running_tag(containers, env, s) != ctx.target]
        if wrong:
            raise HealthCheckFailed("; ".join(wrong))
        return f"all {len(containers)} services Up"

    return Step(
        key="confirm_services", title="Confirm all services are up", action=action,
        shows=(f"docker ps ({env.compose.described}): every service running",),
        leaves=f"{services_named(env)} {_run(env)} {i.target}, healthy, all services up",
        timeout_s=COMMAND_S,
        if_failed="some services are not up; check `docker-compose ps` and their logs.",
    )


def bring_up(i: ProcedureInputs, switched: str) -> tuple[Step, ...]:
    """The spec's common ending: edit the compose file, start, wait for health, confirm."""
    return (
        switch(i, switched),
        start(i),
        wait_healthy(i, deadline_s=i.env.timeouts.health_s),
        _verify_version(i),
        _confirm_services(i),
    )
