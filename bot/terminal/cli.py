"""The terminal front: ``rollbot plan|rollback|resume|put-back|status|history|versions|backups``.

``rollbot notify test`` sends a signed test event (bot/terminal/events_out.py).

Exit status: 0 only when the command (for ``rollback``: the run) succeeded; 1 when a run failed,
was refused or cancelled; 2 for a configuration error or bad input; 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence

from rich.console import Console
from rich.markup import escape

from bot.app import App, load, open_app
from bot.config import Settings
from bot.engine import Run
from bot.errors import ConfigError, InvalidInput, RollbotError
from bot.fleet_view import fleet_shape
from bot.model import ProcedureName, RollbackRequest, RunStatus
from bot.pinning import pinned_request
from bot.recovery.offers import RecoveryChoice, down_sentence
from bot.telemetry.logs import configure_logging
from bot.terminal.events_out import delivering, notify_test
from bot.terminal.render import (
    TerminalProgress,
    render_backups,
    render_history,
    render_plan,
    render_status,
    render_versions,
)
from bot.versions import parse_version

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rollbot", description="Roll production back, safely.")
    sub = p.add_subparsers(dest="command", required=True)

    def targeted(name: str, help_text: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_text)
        sp.add_argument("version", nargs="?", help="target version, e.g. v1.2.2 "
                        "(default: the previous version on the host)")
        sp.add_argument("--procedure", choices=[p.value for p in ProcedureName
                                                if p is not ProcedureName.PUT_BACK],
                        default=ProcedureName.SIMPLE.value)
        sp.add_argument("--env", dest="environment")
        sp.add_argument("--backup", help="backup file name for --procedure restore "
                        "(default: the newest)")
        sp.add_argument("--reason", default="")
        sp.add_argument("--as", dest="actor", help="who is doing this (default: your login)")
        return sp

    targeted("plan", "show the pre-flight and the exact steps; changes nothing")
    rb = targeted("rollback", "roll back (shows the plan and asks, unless --yes)")
    rb.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    rb.add_argument("--quiet-output", action="store_true", help="hide command output lines")
    for name, help_text in (("status", "the active run"), ("versions", "image tags on the host"),
                            ("backups", "database backups on the host")):
        sp = sub.add_parser(name, help=help_text)
        sp.add_argument("--env", dest="environment")
    for name, help_text in (
            ("resume", "after a Ctrl-C left production down: continue that rollback from the "
                       "step where it stopped"),
            ("put-back", "after a Ctrl-C left production down: restore the compose file copy "
                         "and start what ran before")):
        sp = sub.add_parser(name, help=help_text)
        sp.add_argument("run_id", type=int, help="the cancelled run (as printed after Ctrl-C)")
        sp.add_argument("--as", dest="actor", help="who is doing this (default: your login)")
        sp.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    rep = sub.add_parser("report", help="print the rollback report of a run; with --impact "
                         "or --root-cause, write those into it first")
    rep.add_argument("run_id", type=int)
    rep.add_argument("--impact", help="who or what was affected, e.g. \"1,200 users saw "
                     "failed checkouts\" (\"\" clears it)")
    rep.add_argument("--root-cause", dest="root_cause", help="what went wrong")
    rep.add_argument("--as", dest="actor", help="who is writing (default: your login)")
    hist = sub.add_parser("history", help="the last runs")
    hist.add_argument("-n", type=int, default=10)
    notify = sub.add_parser("notify", help="signed events out: `rollbot notify test`")
    notify_sub = notify.add_subparsers(dest="notify_command", required=True)
    test = notify_sub.add_parser("test", help="send a signed test event to every configured "
                                 "webhook (or one) and print each answer")
    test.add_argument("--url", help="only the [[notify.webhooks]] entry with this url")
    test.add_argument("--as", dest="actor", help="who is testing (default: your login)")
    serve = sub.add_parser("serve", help="serve Slack: POST /slack/events, GET /healthz")
    serve.add_argument("--host", default=None,
                       help="address to listen on (default: HOST, else 127.0.0.1; port: PORT; "
                            "put TLS in front)")
    return p


def _actor(args: argparse.Namespace) -> str:
    name = args.actor or os.environ.get("SUDO_USER") or getpass.getuser()
    return f"cli:{name}"


def _request(args: argparse.Namespace, runbook_env: str) -> RollbackRequest:
    return RollbackRequest(
        environment=runbook_env,
        procedure=ProcedureName(args.procedure),
        target=parse_version(args.version) if args.version else None,
        requested_by=_actor(args),
        reason=args.reason,
        backup=args.backup,
    )


def _confirm(console: Console, request: RollbackRequest, database: str | None) -> bool:
    if not sys.stdin.isatty():
        console.print("[red]Not confirmed:[/] standard input is not a terminal; pass --yes.")
        return False
    if request.procedure is ProcedureName.RESTORE and database:
        answer = console.input(f"[bold red]This DROPS and restores {database}.[/] "
                               f"Type the database name to go on: ")
        return answer.strip() == database
    return console.input("Roll back now? [y/N] ").strip().lower() in ("y", "yes")


async def _main(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    runbook = load(settings)  # ConfigError before anything connects
    if args.command == "serve":
        # The Slack front is composed here, at the root, so the engine never imports Slack.
        from handlers.server import serve

        await serve(settings, runbook, host=args.host)
        return EXIT_OK
    async with open_app(settings, runbook) as app:
        return await _dispatch(app, args, console)


async def _dispatch(app: App, args: argparse.Namespace, console: Console) -> int:
    svc = app.rollbot
    if args.command == "report":
        if args.impact is not None or args.root_cause is not None:
            path, markdown = await app.reporter.fill_in(
                args.run_id, impact=args.impact, root_cause=args.root_cause, by=_actor(args))
            console.print(f"Report of run #{args.run_id} rewritten: {path}", markup=False,
                          highlight=False, soft_wrap=True)
        else:
            _, markdown = await app.reporter.render(args.run_id)
        console.print(markdown, markup=False, highlight=False, soft_wrap=True)
        return EXIT_OK
    if args.command == "history":
        render_history(console, await svc.history(limit=args.n))
        return EXIT_OK
    if args.command == "notify":
        return await notify_test(app, url=args.url, by=_actor(args), console=console)
    if args.command in ("resume", "put-back"):
        async with delivering(app):
            return await _recover(app, args, console)
    env_name, env = svc.environment(args.environment)
    if args.command == "status":
        render_status(console, env_name, await svc.status(env_name),
                      await app.verifier.store.pending(env_name))
        return EXIT_OK
    if args.command == "versions":
        render_versions(console, await svc.versions(env_name, actor=_actor(args)))
        return EXIT_OK
    if args.command == "backups":
        render_backups(console, await svc.backups(env_name, actor=_actor(args)))
        return EXIT_OK
    request = _request(args, env_name)
    if args.command == "plan" or not args.yes:
        plan = await svc.plan(request)
        render_plan(console, plan, fleet_shape(env, request.procedure))
        if args.command == "plan":
            return EXIT_OK if plan.preflight.ok else EXIT_FAILED
        if not plan.preflight.ok:
            return EXIT_FAILED
        if not _confirm(console, request, env.database.name if env.database else None):
            console.print("Not confirmed; nothing was changed.")
            return EXIT_FAILED
        # What was shown and confirmed is what runs: the resolved version and backup.
        request = pinned_request(request, target=plan.preflight.target,
                                 backup=plan.preflight.backup,
                                 migrations=plan.preflight.migrations)
    progress = TerminalProgress(console, show_output=not args.quiet_output,
                                canary=env.fleet.canary if env.hosts else 0)
    async with delivering(app):
        with _first_interrupt_cancels(console, by=request.requested_by) as on_run:
            outcome = await svc.rollback(request, observers=[progress], on_run=on_run)
    if outcome.status is RunStatus.REFUSED:
        console.print(f"[bold yellow]REFUSED[/] — {outcome.message}")
    await _say_if_down(app, outcome.run_id, console)
    return EXIT_OK if outcome.status is RunStatus.SUCCEEDED else EXIT_FAILED


async def _say_if_down(app: App, run_id: int, console: Console) -> None:
    """After a cancel that left production down: say so, and the two ways out."""
    offer = await app.recoveries.offer(run_id)
    if offer is None or offer.state != "offered":
        return
    console.print(f"[bold red]{escape(down_sentence(offer.host_state))}[/]")
    console.print(f"  rollbot resume {run_id}     # continue the rollback to "
                  f"{escape(offer.to_version)} from the step where it stopped")
    if offer.put_back_refusal:
        console.print(f"  ({escape(offer.put_back_refusal)})")
    else:
        console.print(f"  rollbot put-back {run_id}   # restore the compose file copy and start "
                      f"{escape(offer.from_version)} again")


async def _recover(app: App, args: argparse.Namespace, console: Console) -> int:
    """``rollbot resume RUN`` / ``rollbot put-back RUN``: the Slack buttons, in the terminal."""
    choice = RecoveryChoice.RESUME if args.command == "resume" else RecoveryChoice.PUT_BACK
    offer = await app.recoveries.offer(args.run_id)
    if offer is None or offer.state != "offered":
        claim = await app.recoveries.choose(args.run_id, choice=choice, by=_actor(args))
        console.print(f"[bold yellow]Not done:[/] {escape(claim.reason)}")
        return EXIT_FAILED
    console.print(f"Run #{offer.run_id} left production down: {escape(offer.host_state)}.")
    what = (f"continue the rollback to {offer.to_version} from the step where it stopped"
            if choice is RecoveryChoice.RESUME else
            f"put back {offer.from_version} (compose file copy, up -d, health check)")
    if not args.yes:
        if not sys.stdin.isatty():
            console.print("[red]Not confirmed:[/] standard input is not a terminal; pass --yes.")
            return EXIT_FAILED
        if console.input(f"{what.capitalize()}? [y/N] ").strip().lower() not in ("y", "yes"):
            console.print("Not confirmed; nothing was changed.")
            return EXIT_FAILED
    claim = await app.recoveries.choose(args.run_id, choice=choice, by=_actor(args))
    if not claim.moved or claim.offer is None:
        console.print(f"[bold yellow]Not done:[/] {escape(claim.reason)}")
        return EXIT_FAILED
    _, env = app.rollbot.environment(claim.offer.environment)
    progress = TerminalProgress(console, canary=env.fleet.canary if env.hosts else 0)
    with _first_interrupt_cancels(console, by=_actor(args)) as on_run:
        outcome = await app.recoveries.recover(claim.offer, by=_actor(args), observers=[progress],
                                    on_run=on_run)
    if outcome.status is RunStatus.REFUSED:
        console.print(f"[bold yellow]REFUSED[/] — {escape(outcome.message)}")
    await _say_if_down(app, outcome.run_id, console)
    return EXIT_OK if outcome.status is RunStatus.SUCCEEDED else EXIT_FAILED


@contextlib.contextmanager
def _first_interrupt_cancels(console: Console, *, by: str) -> Iterator[Callable[[Run], None]]:
    """First Ctrl-C: stop before the next step (never mid-command). Second: abort at once."""
    loop = asyncio.get_running_loop()
    runs: list[Run] = []
    main_task = asyncio.current_task()

    def on_interrupt() -> None:
        if runs and not runs[0].cancel_requested:
            runs[0].cancel(f"{by} (Ctrl-C)")
            console.print("[bold yellow]Stopping before the next step[/] (the current one "
                          "finishes). Press Ctrl-C again to abort at once.")
        elif main_task is not None:
            main_task.cancel()

    try:
        loop.add_signal_handler(signal.SIGINT, on_interrupt)
    except (NotImplementedError, RuntimeError):
        yield runs.append
        return
    try:
        yield runs.append
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings()
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=140)  # logs and pipes: don't squeeze tables
    try:
        configure_logging(level=settings.rollbot_log_level, log_format=settings.rollbot_log_format)
    except ConfigError as exc:
        console.print(f"[bold red]rollbot:[/] {escape(str(exc))}")
        return EXIT_USAGE
    try:
        return asyncio.run(_main(args, settings, console))
    except (ConfigError, InvalidInput) as exc:
        console.print(f"[bold red]rollbot:[/] {escape(str(exc))}")
        return EXIT_USAGE
    except RollbotError as exc:
        console.print(f"[bold red]rollbot:[/] {escape(str(exc))}")
        return EXIT_FAILED
    except (KeyboardInterrupt, asyncio.CancelledError):
        console.print("[bold red]Interrupted.[/] Check `rollbot status` and the host's state.")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
