"""Terminal rendering (rich): live progress, plans, history; the fallback when Slack is down."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bot.events import OutputLine, RunEvent, RunFinished, RunStarted, StepFinished, StepStarted
from bot.fleet_view import (
    FleetShape,
    HostBoard,
    HostLine,
    HostPhase,
    checks_by_host,
    who_runs_what,
)
from bot.model import Backup, Check, RunOutcome, RunRecord, RunStatus, StepStatus
from bot.service import Plan, Versions

_STATUS_STYLE = {
    RunStatus.SUCCEEDED: "bold green",
    RunStatus.FAILED: "bold red",
    RunStatus.REFUSED: "bold yellow",
    RunStatus.CANCELLED: "bold yellow",
    RunStatus.RESTORE_RECOMMENDED: "bold red",
    RunStatus.INTERRUPTED: "bold red",
    RunStatus.RUNNING: "cyan",
    RunStatus.PREFLIGHT: "cyan",
}


def render_checks(console: Console, checks: tuple[Check, ...]) -> None:
    for c in checks:
        mark = "[green]✓[/]" if c.ok else "[red]✗[/]"
        console.print(f"  {mark} {escape(c.name)}: {escape(c.detail)}")


_BETWEEN_S = 1.0  # a host idle between its steps this long gets its line printed
_PHASE_MARK = {
    HostPhase.WAITING: "[dim]·[/]", HostPhase.RUNNING: "[cyan]▶[/]",
    HostPhase.BETWEEN: "[cyan]‖[/]", HostPhase.SUCCEEDED: "[green]✓[/]",
    HostPhase.FAILED: "[red]✗[/]", HostPhase.STOPPED: "[yellow]■[/]",
    HostPhase.UNTOUCHED: "[dim]–[/]",
}


def _render_fleet_checks(console: Console, checks: tuple[Check, ...], fleet: FleetShape) -> None:
    general, per_host = checks_by_host(checks, fleet.hosts)
    render_checks(console, tuple(general))
    for host, own in per_host.items():
        canary = " (canary)" if host in fleet.hosts[:fleet.canary] else ""
        console.print(f"  [bold]{escape(host)}[/]{canary}")
        for c in own:
            mark = "[green]✓[/]" if c.ok else "[red]✗[/]"
            console.print(f"    {mark} {escape(c.name)}: {escape(c.detail)}")


def render_plan(console: Console, plan: Plan, fleet: FleetShape | None = None) -> None:
    r = plan.request
    pre = plan.preflight
    console.print(f"[bold]Plan[/] for {escape(r.environment)}: {escape(pre.current)} → "
                  f"[bold]{escape(pre.target or '?')}[/] ({escape(plan.title)})")
    console.print("[bold]Pre-flight[/]")
    if fleet is None:
        render_checks(console, pre.checks)
    else:
        _render_fleet_checks(console, pre.checks, fleet)
    if not pre.ok:
        console.print(f"[bold red]This rollback would be refused:[/] {escape(pre.refusal)}")
        return
    if fleet is not None:
        console.print(f"[bold]Rollout[/] {escape(fleet.rollout)}")
    console.print("[bold]Steps[/] (nothing has run yet)")
    host = ""
    for s in plan.steps:
        if fleet is not None and s.host != host:
            host = s.host
            console.print(f"  [bold]{escape(host or 'the environment')}[/]")
        flag = " [red](changes production)[/]" if s.destructive else ""
        on = f"{escape(s.host)}: " if s.host else ""  # a fleet: every host's own steps
        console.print(f"  {s.index + 1}. {on}{escape(s.title)}{flag}")
        for line in s.shows:
            console.print(f"       [dim]$ {escape(line)}[/]", soft_wrap=True)


class TerminalProgress:
    """An observer that prints every step as it starts and ends, and the command output.

    In a fleet it prints a host's line each time that host's state changes, and a table of
    every host at the end.
    """

    def __init__(self, console: Console, *, show_output: bool = True, canary: int = 0) -> None:
        self._console = console
        self._show_output = show_output
        self._started = time.monotonic()
        self._total = 0
        self._board = HostBoard(canary=canary)
        self._printed: dict[str, tuple[HostPhase, str]] = {}
        self._between: dict[str, float] = {}  # hosts between two steps, not printed yet

    async def __call__(self, event: RunEvent) -> None:
        changed = self._board.apply(event, now=datetime.now(UTC))
        if self._board.is_fleet:
            self._fleet(event, changed)
            return
        c = self._console
        if isinstance(event, RunStarted):
            self._total = len(event.steps)
            r = event.request
            c.print(f"[bold]Rollback #{event.run_id}[/] in {escape(r.environment)}: "
                    f"{escape(event.from_version)} → [bold]{escape(event.to_version)}[/] "
                    f"({r.procedure}), requested by {escape(r.requested_by)}")
            c.print("[bold]Pre-flight[/]")
            render_checks(c, event.checks)
        elif isinstance(event, StepStarted):
            c.print(f"[cyan]▶ [{event.step.index + 1}/{self._total}] "
                    f"{escape(event.step.title)}[/]")
        elif isinstance(event, OutputLine) and self._show_output:
            c.print(f"    [dim]│ {escape(event.line)}[/]", soft_wrap=True, highlight=False)
        elif isinstance(event, StepFinished):
            res = event.result
            n = event.step.index + 1
            took = f"{res.duration_s:.1f} s" if res.duration_s is not None else ""
            if res.status is StepStatus.SUCCEEDED:
                c.print(f"[green]✓ [{n}/{self._total}] {escape(res.title)}[/] [dim]{took}[/]"
                        f"  {escape(res.summary)}")
            else:
                c.print(f"[red]✗ [{n}/{self._total}] {escape(res.title)}[/] [dim]{took}[/]  "
                        f"{escape(res.error)}")
                c.print(f"  [bold]Host state:[/] {escape(event.host_state)}")
        elif isinstance(event, RunFinished):
            o = event.outcome
            elapsed = time.monotonic() - self._started
            c.print(f"[{_STATUS_STYLE.get(o.status, 'bold')}]{o.status.value.upper()}[/] "
                    f"in {elapsed:.1f} s — {escape(o.message)}")


    def _fleet(self, event: RunEvent, changed: tuple[str, ...]) -> None:
        c = self._console
        if isinstance(event, RunStarted):
            r = event.request
            c.print(f"[bold]Rollback #{event.run_id}[/] in {escape(r.environment)}: "
                    f"{escape(event.from_version)} → [bold]{escape(event.to_version)}[/] "
                    f"({r.procedure}) on {len(event.hosts)} hosts, requested by "
                    f"{escape(r.requested_by)}")
            c.print("[bold]Pre-flight[/]")
            _render_fleet_checks(c, event.checks, FleetShape(
                hosts=event.hosts, canary=self._board.canary, rollout=""))
            c.print("[bold]Hosts[/] (rollout order)")
        elif isinstance(event, OutputLine) and self._show_output:
            who = f"{event.host}: " if event.host else ""
            c.print(f"    [dim]│ {escape(who + event.line)}[/]", soft_wrap=True, highlight=False)
        elif isinstance(event, StepStarted | StepFinished) and not event.step.host:
            mark = "[cyan]▶[/]"
            if isinstance(event, StepFinished):
                ok = event.result.status is StepStatus.SUCCEEDED
                mark = "[green]✓[/]" if ok else "[red]✗[/]"
            self._print_lines(changed, flush=True)
            c.print(f"{mark} {escape(event.step.title)} [dim](the environment)[/]")
            return
        elif isinstance(event, RunFinished):
            self._print_lines(changed)
            self._final(event.outcome)
            return
        self._print_lines(changed)

    def _print_lines(self, hosts: tuple[str, ...], *, flush: bool = False) -> None:
        """Print each host's line whose state changed since it was last printed.

        "Between two steps" usually lasts until the host's next step starts, a moment later;
        it is printed only when it lasts (a second, or the environment's own work starts: the
        hosts stopped, waiting for the database work).
        """
        clock = time.monotonic()
        waited = [h for h, since in self._between.items()
                  if h not in hosts and (flush or clock - since >= _BETWEEN_S)]
        for line in (self._board.line(h, now=datetime.now(UTC)) for h in (*waited, *hosts)):
            if line.phase is HostPhase.BETWEEN and line.name in hosts:
                self._between.setdefault(line.name, clock)
                continue
            self._between.pop(line.name, None)
            if self._printed.get(line.name) != (line.phase, line.text):
                self._printed[line.name] = (line.phase, line.text)
                self._console.print(host_text(line), soft_wrap=True, highlight=False)

    def _final(self, o: RunOutcome) -> None:
        c = self._console
        table = Table("host", "result", "version", "state")
        for line in self._board.lines(now=datetime.now(UTC)):
            ended = next((h for h in o.hosts if h.name == line.name), None)
            table.add_row(escape(line.name) + (" (canary)" if line.canary else ""),
                          f"{_PHASE_MARK[line.phase]} {line.phase.value}",
                          escape(ended.version or "?") if ended else "?",
                          escape(ended.state if ended else line.text))
        c.print(table)
        if o.hosts:
            c.print(f"[bold]Who runs what:[/] {escape(who_runs_what(o.hosts))}", soft_wrap=True)
        elapsed = time.monotonic() - self._started
        c.print(f"[{_STATUS_STYLE.get(o.status, 'bold')}]{o.status.value.upper()}[/] "
                f"in {elapsed:.1f} s — {escape(o.message)}")


def host_text(line: HostLine) -> str:
    """A fleet host's line in the terminal (rich markup)."""
    canary = " (canary)" if line.canary else ""
    return f"  {_PHASE_MARK[line.phase]} [bold]{escape(line.name)}[/]{canary}  {escape(line.text)}"


def render_history(console: Console, runs: list[RunRecord]) -> None:
    table = Table("#", "when (UTC)", "env", "who", "from → to", "procedure", "result", "took")
    for r in runs:
        took = f"{r.duration_s:.0f} s" if r.duration_s is not None else "…"
        table.add_row(str(r.id), f"{r.created_at:%Y-%m-%d %H:%M}", r.environment,
                      r.requested_by, f"{r.from_version or '?'} → {r.to_version or '?'}",
                      r.procedure.value,
                      f"[{_STATUS_STYLE.get(r.status, '')}]{r.status.value}[/]", took)
    console.print(table)


def render_status(console: Console, environment: str, run: RunRecord | None,
                  pending: list[dict[str, Any]] | None = None) -> None:
    for p in pending or []:
        console.print(f"Pending: {p['tier']} verification of run #{p['run_id']} due "
                      f"{p['due_at']:%Y-%m-%d %H:%M:%S} UTC")
    if run is None:
        console.print(f"No rollback is running in {escape(environment)}.")
        return
    console.print(f"Run #{run.id} in {escape(run.environment)}: {run.procedure.value} "
                  f"{run.from_version or '?'} → {run.to_version or '?'}, by "
                  f"{escape(run.requested_by)} since {run.created_at:%H:%M:%S} UTC "
                  f"({run.status.value})")
    for i, s in enumerate(run.steps):
        console.print(f"  {i + 1}. {s.status.value:<9} {escape(s.title)}")


def render_versions(console: Console, v: Versions) -> None:
    console.print(f"Running: [bold]{escape(v.running or 'nothing')}[/]; compose file names "
                  f"{escape(v.in_compose_file)}")
    table = Table("tag", "created (UTC)", "image id")
    for t in v.tags:
        mark = " (running)" if t.tag == v.running else ""
        table.add_row(t.tag + mark, f"{t.created:%Y-%m-%d %H:%M:%S}",
                      t.image_id.removeprefix("sha256:")[:12])
    console.print(table)
    for c in v.containers:
        console.print(f"  {escape(c.name)}: {escape(c.image)} — {escape(c.status)}")


def render_backups(console: Console, backups: list[Backup]) -> None:
    table = Table("backup", "size", "taken (UTC)")
    for b in backups:
        table.add_row(b.name, f"{b.size / 1e6:.1f} MB", f"{b.modified:%Y-%m-%d %H:%M}")
    console.print(table)
