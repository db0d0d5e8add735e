"""What a person reads of a fleet: each host's progress from the run's events, checks per host."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from bot.config import EnvironmentConfig
from bot.events import RunEvent, RunFinished, RunStarted, StepFinished, StepInfo, StepStarted
from bot.fleet.waves import rollout_waves
from bot.model import Check, HostOutcome, ProcedureName, RunStatus, StepStatus

_DATABASE_WORK = (ProcedureName.MIGRATIONS, ProcedureName.RESTORE)
_NAMES_SHOWN = 12  # a line listing hosts names this many, then counts the rest


class HostPhase(StrEnum):
    """Where one host is in the run, in the words of its line."""

    WAITING = "waiting"        # nothing has run on it yet
    RUNNING = "running"        # one of its steps runs now
    BETWEEN = "between"        # some steps done, its next not started (e.g. the database work)
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"        # touched, then stopped by the rollout or a cancel
    UNTOUCHED = "untouched"    # the run ended before anything ran on it


@dataclass(frozen=True)
class HostLine:
    """One host's line: its name, whether it is a canary, its phase and what to say about it."""

    name: str
    canary: bool
    phase: HostPhase
    text: str
    running_s: float | None = None  # how long its current step has run, while one runs


@dataclass(frozen=True)
class HostFailure:
    """A host's failed step, with what a person needs to act on it."""

    host: str
    step: str        # "step 5/7 'Wait for health'"
    error: str
    output_tail: str
    state: str


@dataclass(frozen=True)
class FleetShape:
    """What the config says of a fleet: its hosts in rollout order, the canaries, the order."""

    hosts: tuple[str, ...]
    canary: int
    rollout: str  # one sentence: the canary, then the batches, and when the rollout stops


def fleet_shape(env: EnvironmentConfig, procedure: ProcedureName) -> FleetShape | None:
    """The fleet an environment lists; None for a one-host environment (shown as today)."""
    if not env.hosts:
        return None
    names = tuple(name for name, _ in env.members)
    return FleetShape(hosts=names, canary=env.fleet.canary,
                      rollout=_rollout_sentence(env, names, procedure))


def _rollout_sentence(env: EnvironmentConfig, names: tuple[str, ...],
                      procedure: ProcedureName) -> str:
    fleet = env.fleet
    # The same waves the rollout runs (bot/fleet/waves.py), so the sentence cannot drift.
    waves = rollout_waves(names, fleet)
    canaries = waves[0] if fleet.canary else ()
    batch_waves = waves[1:] if fleet.canary else waves
    rest = tuple(h for wave in batch_waves for h in wave)
    parts: list[str] = []
    if canaries:
        parts.append(f"{name_list(canaries)} first (canary: alone, and verified before any "
                     "other host is touched)")
    if rest:
        size = max(len(w) for w in batch_waves)
        batches = len(batch_waves)
        who = ("then the other host" if len(rest) == 1 else f"then the other {len(rest)}") \
            if canaries else f"all {len(rest)}"
        if batches == 1:
            parts.append(f"{who} at once: {name_list(rest)}")
        else:
            parts.append(f"{who} in {batches} batches of up to {size} (the hosts of a batch in "
                         f"parallel): {name_list(rest)}")
    order = ", ".join(parts)
    if procedure in _DATABASE_WORK:
        order = (f"every host is stopped first, then the database work runs once on "
                 f"{env.database_member[0]}; then the hosts start: {order}")
    stop = ("the first failed host stops the rollout" if fleet.max_failed_hosts == 0 else
            f"more than {fleet.max_failed_hosts} failed hosts stop the rollout")
    return (f"Rollout over {len(names)} hosts: {order}. A failed canary or {stop}; hosts not "
            "started by then stay untouched.")


def name_list(names: Sequence[str], *, limit: int = _NAMES_SHOWN) -> str:
    """Host names for a sentence, the rest counted: "web-1, web-2 and 48 more"."""
    if len(names) <= limit:
        return ", ".join(names)
    return f"{', '.join(names[:limit])} and {len(names) - limit} more"


def checks_by_host(checks: Sequence[Check], hosts: Sequence[str]
                   ) -> tuple[list[Check], dict[str, list[Check]]]:
    """Pre-flight checks split into the environment's and each host's ("web-2: Target image")."""
    general: list[Check] = []
    per_host: dict[str, list[Check]] = {h: [] for h in hosts}
    for c in checks:
        host, sep, name = c.name.partition(": ")
        if sep and host in per_host:
            per_host[host].append(Check(name, c.ok, c.detail))
        else:
            general.append(c)
    return general, per_host


def who_runs_what(outcomes: Sequence[HostOutcome]) -> str:
    """Which hosts run which version: "v1.2.2: web-1, web-2 · v1.2.3: web-3 (untouched)"."""
    groups: dict[str, list[str]] = {}
    for h in outcomes:
        if h.status is RunStatus.SUCCEEDED:
            mark = ""
        elif not h.touched:
            mark = " (untouched)"
        elif h.status is RunStatus.CANCELLED:
            mark = " (stopped)"
        else:
            mark = " (FAILED)"
        groups.setdefault(h.version or "version unknown", []).append(h.name + mark)
    return " · ".join(f"{version}: {name_list(names)}" for version, names in groups.items())


@dataclass
class HostBoard:
    """Follows a fleet run's events and says, for each host, where it is."""

    canary: int = 0
    hosts: tuple[str, ...] = ()
    to_version: str = ""
    run_status: RunStatus | None = None
    _steps: dict[str, list[StepInfo]] = field(default_factory=dict)
    _status: dict[int, StepStatus] = field(default_factory=dict)
    _took: dict[str, float] = field(default_factory=dict)
    _state: dict[str, str] = field(default_factory=dict)
    _failures: dict[str, HostFailure] = field(default_factory=dict)
    _outcomes: dict[str, HostOutcome] = field(default_factory=dict)
    # Each host's words, kept until an event touches that host: a render of a large fleet
    # then costs one dictionary read per quiet host.
    _said: dict[str, tuple[HostPhase, str]] = field(default_factory=dict)
    _since: dict[str, datetime] = field(default_factory=dict)  # its running step's start

    @property
    def is_fleet(self) -> bool:
        return bool(self.hosts)

    @property
    def failures(self) -> list[HostFailure]:
        """Failed hosts in the order they failed."""
        return list(self._failures.values())

    @property
    def outcomes(self) -> tuple[HostOutcome, ...]:
        return tuple(self._outcomes.values())

    def apply(self, event: RunEvent, *, now: datetime) -> tuple[str, ...]:
        """Take one event; return the hosts whose line may have changed."""
        changed = self._apply(event, now=now)
        if any(h in self.hosts[:self.canary] for h in changed):
            self._said.clear()  # the canary's progress changes what the others wait for
        for h in changed:
            self._said.pop(h, None)
        return changed

    def _apply(self, event: RunEvent, *, now: datetime) -> tuple[str, ...]:
        if isinstance(event, RunStarted):
            self.hosts, self.to_version = event.hosts, event.to_version
            self._steps = {h: [s for s in event.steps if s.host == h] for h in self.hosts}
            return self.hosts
        if isinstance(event, StepStarted) and event.step.host in self._steps:
            self._status[event.step.index] = StepStatus.RUNNING
            self._since[event.step.host] = now
            return (event.step.host,)
        if isinstance(event, StepFinished) and event.step.host in self._steps:
            return self._finished(event)
        if isinstance(event, RunFinished):
            self.run_status = event.outcome.status
            self._outcomes = {h.name: h for h in event.outcome.hosts}
            return self.hosts
        return ()

    def _finished(self, event: StepFinished) -> tuple[str, ...]:
        step, result, host = event.step, event.result, event.step.host
        self._status[step.index] = result.status
        self._since.pop(host, None)
        if result.duration_s is not None:
            self._took[host] = self._took.get(host, 0.0) + result.duration_s
        self._state[host] = event.host_state
        if result.status is StepStatus.FAILED and host not in self._failures:
            self._failures[host] = HostFailure(
                host=host, step=f"step {self._position(step)} '{step.title}'",
                error=result.error, output_tail=result.output_tail, state=event.host_state)
        return (host,)

    def _position(self, step: StepInfo) -> str:
        own = self._steps.get(step.host, [])
        number = next((i for i, s in enumerate(own, 1) if s.index == step.index), 0)
        return f"{number}/{len(own)}"

    def _done(self, host: str) -> bool:
        own = self._steps.get(host, [])
        return bool(own) and all(self._status.get(s.index) is StepStatus.SUCCEEDED for s in own)

    def lines(self, *, now: datetime) -> list[HostLine]:
        return [self.line(h, now=now) for h in self.hosts]

    def line(self, host: str, *, now: datetime) -> HostLine:
        if host not in self._said:
            self._said[host] = self._describe(host)
        phase, text = self._said[host]
        since = self._since.get(host) if phase is HostPhase.RUNNING else None
        return HostLine(name=host, canary=host in self.hosts[:self.canary], phase=phase,
                        text=text,
                        running_s=(now - since).total_seconds() if since is not None else None)

    def _describe(self, host: str) -> tuple[HostPhase, str]:
        own = self._steps.get(host, [])
        status = [self._status.get(s.index, StepStatus.PENDING) for s in own]
        running = [s for s, st in zip(own, status, strict=True) if st is StepStatus.RUNNING]
        done = [s for s, st in zip(own, status, strict=True) if st is StepStatus.SUCCEEDED]
        outcome = self._outcomes.get(host)
        if host in self._failures or (outcome is not None and outcome.touched and
                                      outcome.status not in (RunStatus.SUCCEEDED,
                                                             RunStatus.CANCELLED)):
            return HostPhase.FAILED, self._failed(host, outcome)
        if running and self.run_status is None:
            return HostPhase.RUNNING, f"step {self._position(running[0])} {running[0].title}"
        if (outcome is not None and outcome.status is RunStatus.SUCCEEDED) or (
                own and len(done) == len(own)):
            version = (outcome.version if outcome else None) or self.to_version
            took = f" ({self._took[host]:.0f} s)" if host in self._took else ""
            said = _left(outcome, self._state.get(host, "")) or f"runs {version}"
            return HostPhase.SUCCEEDED, f"{said}{took}"
        if self.run_status is not None:  # the run ended before this host finished
            return self._ended(host, outcome, touched=bool(done or running))
        if done:
            last, state = done[-1], self._state.get(host, "")
            return HostPhase.BETWEEN, f"waiting after step {self._position(last)} {last.title}" \
                                      + (f" · {_clip(state, 200)}" if state else "")
        waits_for_canary = host not in self.hosts[:self.canary] and not all(
            self._done(h) for h in self.hosts[:self.canary])
        return HostPhase.WAITING, "waiting for the canary" if waits_for_canary else "waiting"

    def _failed(self, host: str, outcome: HostOutcome | None) -> str:
        f = self._failures.get(host)
        left = _left(outcome, f.state if f else self._state.get(host, ""))
        if f is None:  # the run's outcome says so, no step of it failed (e.g. still unhealthy)
            status = outcome.status.value.replace("_", " ").upper() if outcome else "FAILED"
            return f"{status}: {_clip(left, 200)}"
        return f"FAILED at {f.step}: {_clip(f.error, 200)} · left: {_clip(left, 200)}"

    def _ended(self, host: str, outcome: HostOutcome | None, *, touched: bool
               ) -> tuple[HostPhase, str]:
        """A host the run ended before it finished: untouched, or stopped part-way."""
        left = _left(outcome, self._state.get(host, ""))
        if not touched and (outcome is None or not outcome.touched):
            return HostPhase.UNTOUCHED, left if left.startswith("untouched") else \
                "untouched" + (f": {left}" if left else "")
        why = "the cancel" if self.run_status is RunStatus.CANCELLED else "the rollout"
        own = self._steps.get(host, [])
        done = [s for s in own if self._status.get(s.index) is StepStatus.SUCCEEDED]
        after = f" after step {self._position(done[-1])} {done[-1].title}" if done else ""
        return HostPhase.STOPPED, f"stopped by {why}{after}" + (
            f" · left: {_clip(left, 200)}" if left else "")


def _left(outcome: HostOutcome | None, otherwise: str) -> str:
    """The state a host is left in: the run's last word on it, else its last step's."""
    return outcome.state if outcome is not None and outcome.state else otherwise


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
