"""A fleet in Block Kit: a line per host, failures and checks per host, the rollout order."""

from __future__ import annotations

from collections.abc import Sequence

from bot.events import StepInfo
from bot.fleet_view import (
    FleetShape,
    HostFailure,
    HostLine,
    HostPhase,
    checks_by_host,
    name_list,
    who_runs_what,
)
from bot.model import Check, HostOutcome, StepStatus
from handlers.blocks.kit import STEP_ICON, Blocks, clip, esc, section

PHASE_ICON = {
    HostPhase.WAITING: "⬜", HostPhase.RUNNING: "⏳", HostPhase.BETWEEN: "⏸️",
    HostPhase.SUCCEEDED: "✅", HostPhase.FAILED: "❌", HostPhase.STOPPED: "🛑",
    HostPhase.UNTOUCHED: "➖",
}
_SECTION = 2900          # room under Slack's 3000 characters per text, for the heading
_HOSTS_BUDGET = 3 * _SECTION  # the host lines of one message: at most three sections
_CALM = (HostPhase.WAITING, HostPhase.SUCCEEDED, HostPhase.UNTOUCHED)
_BUSY = (HostPhase.RUNNING, HostPhase.BETWEEN)
_FAILURES_SHOWN = 3      # failed hosts with their error and output tail in the message
_DETAILED_FAILURES = 10  # failed or stopped hosts listed one per line when summarising
_NAMES_PER_LINE = 12     # more hosts than this passing pre-flight: named on one line


def host_line(line: HostLine) -> str:
    canary = " _(canary)_" if line.canary else ""
    running = f" ({line.running_s:.0f} s…)" if line.running_s is not None else ""
    return f"{PHASE_ICON[line.phase]} *{esc(line.name)}*{canary} · {esc(line.text)}{running}"


def _group(phase: HostPhase, lines: Sequence[HostLine]) -> str:
    names = name_list([ln.name for ln in lines])
    return f"{PHASE_ICON[phase]} {phase.value} ({len(lines)}): {esc(names)}"


def host_lines(lines: Sequence[HostLine]) -> list[str]:
    """One line per host in rollout order; hosts in the same quiet state grouped when too long.

    Canaries, running and failed hosts keep their own line as long as they fit: they are what
    a person watches. Then running hosts are grouped too, then all but ten failures.
    """
    out = [host_line(ln) for ln in lines]
    for grouped in (_CALM, (*_CALM, *_BUSY)):
        if _size(out) <= _HOSTS_BUDGET:
            return out
        out = _summarised(lines, [ln.name for ln in lines
                                  if ln.canary or ln.phase not in grouped])
    if _size(out) <= _HOSTS_BUDGET:
        return out
    loud = [ln.name for ln in lines if ln.canary or ln.phase not in (*_CALM, *_BUSY)]
    return _summarised(lines, loud[:_DETAILED_FAILURES])


def _summarised(lines: Sequence[HostLine], keep: Sequence[str]) -> list[str]:
    rest = [ln for ln in lines if ln.name not in keep]
    return [*(host_line(ln) for ln in lines if ln.name in keep),
            *(_group(p, [ln for ln in rest if ln.phase is p]) for p in HostPhase
              if any(ln.phase is p for ln in rest))]


def _size(lines: Sequence[str]) -> int:
    return sum(len(x) + 1 for x in lines)


def titled_sections(title: str, lines: Sequence[str], *, most: int = 3) -> Blocks:
    """Lines under a title, in as many sections as Slack's text limit needs (at most ``most``)."""
    chunks: list[list[str]] = [[]]
    for line in lines:
        line = clip(line, _SECTION - len(title) - 2)
        if chunks[-1] and _size(chunks[-1]) + len(line) > _SECTION - len(title) - 2:
            chunks.append([])
        chunks[-1].append(line)
    if len(chunks) > most:
        cut = sum(len(c) for c in chunks[most:])
        chunks = chunks[:most]
        chunks[-1] = [*chunks[-1][:-1], f"… and {cut + 1} more lines"]
    return [section((f"{title}\n" if i == 0 else "") + "\n".join(c))
            for i, c in enumerate(chunks)]


def hosts_section(lines: Sequence[HostLine]) -> Blocks:
    return titled_sections("*Hosts* (rollout order)", host_lines(lines))


def failures_section(failures: Sequence[HostFailure]) -> Blocks:
    """What failed, host by host: the first few with their output tail, the rest named."""
    blocks: Blocks = []
    tail_room = 1500 if len(failures) == 1 else 700
    for f in failures[:_FAILURES_SHOWN]:
        text = (f"*What failed on {esc(f.host)}:* {esc(f.step)}: {esc(clip(f.error, 600))}\n"
                f"*{esc(f.host)} is left:* {esc(clip(f.state, 400))}")
        if f.output_tail:
            tail = clip(f.output_tail[-tail_room:], tail_room).replace("```", "'''")
            text += f"\n```{tail}```"
        blocks.append(section(text))
    more = [f.host for f in failures[_FAILURES_SHOWN:]]
    if more:
        blocks.append(section(f"{len(more)} more host(s) failed: {esc(name_list(more))} "
                              "(their lines above; their output in the thread)."))
    return blocks


def shared_steps_section(steps: Sequence[StepInfo], status: dict[int, StepStatus]) -> Blocks:
    """Steps that belong to no single host (the environment's), one line each."""
    if not steps:
        return []
    lines = [f"{STEP_ICON[status.get(s.index, StepStatus.PENDING)]} {esc(s.title)}"
             for s in steps]
    return titled_sections("*Environment steps*", lines, most=1)


def versions_section(outcomes: Sequence[HostOutcome]) -> Blocks:
    """The final word: which hosts run which version."""
    if not outcomes:
        return []
    return [section(f"*Who runs what:* {esc(clip(who_runs_what(outcomes), 2800))}")]


def fleet_checks(checks: Sequence[Check], shape: FleetShape) -> Blocks:
    """Pre-flight grouped per host; a host whose checks all passed takes one line."""
    general, per_host = checks_by_host(checks, shape.hosts)
    lines = [f"{'✅' if c.ok else '❌'} *{esc(c.name)}*: {esc(clip(c.detail, 300))}"
             for c in general]
    detailed: list[str] = []
    for host, own in per_host.items():
        canary = " _(canary)_" if host in shape.hosts[:shape.canary] else ""
        detailed.append(f"*{esc(host)}*{canary}")
        detailed += [f"    {'✅' if c.ok else '❌'} {esc(c.name)}: {esc(clip(c.detail, 200))}"
                     for c in own]
    if _size(lines + detailed) > 2 * _SECTION:
        detailed = [_host_checks_line(host, own) for host, own in per_host.items()]
    # Past a screenful of hosts, the ones that passed everything are one line.
    if len(per_host) > _NAMES_PER_LINE or _size(lines + detailed) > 2 * _SECTION:
        passed = [h for h, own in per_host.items() if own and all(c.ok for c in own)]
        detailed = [f"✅ every check passed on {len(passed)} hosts: {esc(name_list(passed))}"]
        detailed += [_host_checks_line(host, own) for host, own in per_host.items()
                     if host not in passed]
    return titled_sections("*Pre-flight*", lines + detailed)


def _host_checks_line(host: str, checks: Sequence[Check]) -> str:
    failed = [c for c in checks if not c.ok]
    if not checks:
        return f"➖ *{esc(host)}*: no checks"
    if not failed:
        return f"✅ *{esc(host)}*: {len(checks)} checks passed"
    why = "; ".join(f"{c.name}: {clip(c.detail, 160)}" for c in failed)
    return f"❌ *{esc(host)}*: {esc(why)} ({len(checks) - len(failed)} passed)"


def fleet_steps(steps: Sequence[StepInfo], shape: FleetShape) -> Blocks:
    """The steps once: the first host's, each host running its own; the environment's apart."""
    first = next((h for h in shape.hosts if any(s.host == h for s in steps)), "")
    own = [s for s in steps if s.host == first]
    lines = [f"{n}. {esc(s.title)}{'  _(changes production)_' if s.destructive else ''}"
             for n, s in enumerate(own, 1)]
    shared = [f"• {esc(s.title)}" for s in steps if not s.host]
    title = (f"*Steps on each host* ({len(steps)} in all over {len(shape.hosts)} hosts; "
             f"{esc(first)} shown)")
    blocks = titled_sections(title, lines, most=1)
    if shared:
        blocks += titled_sections("*Steps once for the environment*", shared, most=1)
    return [*blocks, section(f"*Rollout:* {esc(shape.rollout)}")]


def host_output(host: str, step: str, lines: Sequence[str], *, done: StepStatus | None) -> str:
    """A fleet host's thread message: the tail of its command output, its steps marked."""
    icon = STEP_ICON[done] if done else "⏳"
    body = "\n".join(lines)[-2500:].replace("```", "'''")
    return f"{icon} *{esc(host)}* · {esc(step)}\n```{body or ' '}```"
