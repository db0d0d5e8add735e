"""The spec's Rollback Decision Matrix as pure code: answers in, a verdict with its reasons out.

Source: production-rollback-procedures.md, "Rollback Decision Matrix": the "When to Rollback"
table and the "Rollback vs. Fix Forward" lists. ``assess`` applies them in this order:

1. The table. The scenario's row gives the action, the urgency and the procedure exactly as the
   table says. "Other" is not in the table: it starts as "roll back if not fixed in 30 minutes"
   (the lists' own 30-minute limit), urgency HIGH when users are affected and LOW when not.
2. The lists refine the row. ``RULES`` is one tuple in precedence order. The first rule that
   matches decides the action; later matches that point the same way add their reason, and
   those that point the other way are reported as outweighed, so nothing the person answered
   is silently ignored. The order, and why:

   a. Issue is critical (a CRITICAL row): the table's rollback stands, whatever the lists say.
      A rollback that loses data is still done, but the verdict says so loudly and names the
      restore / migration trade-off; a recommended Procedure 1 (code only) becomes Procedure 2.
   b. Rollback would cause data loss: fix forward. Lost data cannot be rolled forward again,
      and a non-critical issue can wait for a fix.
   c. Issue is minor (the table's "Minor bug, workaround available" row): fix forward, even
      when the root cause is unknown or the fix is slow, since users have a workaround.
   d. Root cause unknown: roll back now.
   e. Fix would take > 30 minutes: roll back now.
   f. The row's own limit, when shorter than 30 minutes, is missed (performance: "not
      fixable in 15 min"): roll back now.
   g. Fix is quick (< 15 minutes) and root cause identified (d guarantees the latter when g
      decides): fix forward, keeping the row's limit as the point to roll back at.

   When no rule matches, the table's row stands (e.g. "roll back if not fixed in 15 min" while
   nobody knows yet how long a fix takes). Urgency always comes from the table.
3. "Previous version is known stable" never decides on its own: when true it supports a
   rollback; when false the verdict warns that rolling back may trade this problem for another.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from bot.errors import InvalidInput
from bot.model import ProcedureName
from bot.procedures.catalog import TITLES

QUICK_FIX_MINUTES = 15  # "Fix is quick (< 15 minutes)"
LONG_FIX_MINUTES = 30   # "Fix would take > 30 minutes"


class Scenario(StrEnum):
    CRITICAL_BUG = "critical_bug"
    SERVICE_DOWN = "service_down"
    DATA_CORRUPTION = "data_corruption"
    PERFORMANCE_DEGRADATION = "performance_degradation"
    PARTIAL_OUTAGE = "partial_outage"
    MINOR_BUG = "minor_bug"
    STAGING_ISSUE = "staging_issue"
    OTHER = "other"


class Action(StrEnum):
    ROLLBACK_NOW = "rollback_now"
    ROLLBACK_AND_RESTORE = "rollback_and_restore"
    ROLLBACK_IF_NOT_FIXED_IN_15 = "rollback_if_not_fixed_in_15"
    ROLLBACK_IF_NOT_FIXED_IN_30 = "rollback_if_not_fixed_in_30"
    FIX_FORWARD = "fix_forward"
    ROLLBACK_OR_REDEPLOY = "rollback_or_redeploy"


class Urgency(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    LOW = "low"


class Side(StrEnum):
    """Which of the spec's two lists a rule comes from."""

    ROLLBACK = "roll back"
    FIX_FORWARD = "fix forward"


@dataclass(frozen=True, kw_only=True)
class Assessment:
    """The spec's questions, answered by the incident commander."""

    scenario: Scenario
    users_affected: bool
    root_cause_known: bool
    minutes_to_fix: int | None = None  # None: nobody knows yet
    data_loss_if_rolled_back: bool
    previous_version_known_stable: bool = True
    environment: str

    def __post_init__(self) -> None:
        if self.minutes_to_fix is not None and self.minutes_to_fix < 0:
            raise InvalidInput("The minutes to a fix cannot be negative; leave it empty if "
                               "nobody knows yet.")


@dataclass(frozen=True)
class Verdict:
    action: Action
    urgency: Urgency
    reasons: tuple[str, ...]
    recommended_procedure: ProcedureName | None


@dataclass(frozen=True)
class TableRow:
    """One row of the spec's "When to Rollback" table, in the spec's words."""

    scenario_text: str
    action_text: str
    action: Action
    urgency: Urgency | None  # None: HIGH if users are affected, else LOW (only "other")
    procedure: ProcedureName | None
    limit_minutes: int | None = None  # the row's "if not fixable in N min"


DECISION_TABLE: Mapping[Scenario, TableRow] = MappingProxyType({
    Scenario.CRITICAL_BUG: TableRow(
        "Critical bug affecting users", "Rollback immediately",
        Action.ROLLBACK_NOW, Urgency.CRITICAL, ProcedureName.SIMPLE),
    Scenario.SERVICE_DOWN: TableRow(
        "Service completely down", "Rollback immediately",
        Action.ROLLBACK_NOW, Urgency.CRITICAL, ProcedureName.EMERGENCY),
    Scenario.DATA_CORRUPTION: TableRow(
        "Data corruption detected", "Rollback + restore backup",
        Action.ROLLBACK_AND_RESTORE, Urgency.CRITICAL, ProcedureName.RESTORE),
    Scenario.PERFORMANCE_DEGRADATION: TableRow(
        "Performance degradation > 50%", "Rollback if not fixable in 15 min",
        Action.ROLLBACK_IF_NOT_FIXED_IN_15, Urgency.HIGH, ProcedureName.SIMPLE, 15),
    Scenario.PARTIAL_OUTAGE: TableRow(
        "Partial service outage", "Rollback if not fixable in 30 min",
        Action.ROLLBACK_IF_NOT_FIXED_IN_30, Urgency.HIGH, ProcedureName.SIMPLE, 30),
    Scenario.MINOR_BUG: TableRow(
        "Minor bug, workaround available", "Fix forward instead",
        Action.FIX_FORWARD, Urgency.LOW, None),
    Scenario.STAGING_ISSUE: TableRow(
        "Staging environment issue", "Rollback or redeploy",
        Action.ROLLBACK_OR_REDEPLOY, Urgency.LOW, ProcedureName.SIMPLE),
    # Not in the spec's table: the lists decide, with their 30-minute limit meanwhile.
    Scenario.OTHER: TableRow(
        "Something else", "Rollback if not fixable in 30 min",
        Action.ROLLBACK_IF_NOT_FIXED_IN_30, None, ProcedureName.SIMPLE, LONG_FIX_MINUTES),
})

_SIDE_OF: Mapping[Action, Side | None] = MappingProxyType({
    Action.ROLLBACK_NOW: Side.ROLLBACK,
    Action.ROLLBACK_AND_RESTORE: Side.ROLLBACK,
    Action.FIX_FORWARD: Side.FIX_FORWARD,
    Action.ROLLBACK_IF_NOT_FIXED_IN_15: None,  # fix first, then roll back: both lists
    Action.ROLLBACK_IF_NOT_FIXED_IN_30: None,
    Action.ROLLBACK_OR_REDEPLOY: None,
})
_VERB: Mapping[Action, str] = MappingProxyType({
    Action.ROLLBACK_NOW: "Roll back now",
    Action.ROLLBACK_AND_RESTORE: "Roll back and restore the database",
    Action.FIX_FORWARD: "Fix forward",
})

Predicate = Callable[[Assessment, TableRow], bool]
Sentence = Callable[[Assessment, TableRow], str]


@dataclass(frozen=True)
class Rule:
    """One bullet of the spec's "Rollback vs. Fix Forward" lists (or the row's own limit)."""

    name: str       # how other reasons refer to it: "the data-loss rule"
    side: Side
    source: str     # where the spec says it
    spec: str       # the spec's words; "{row.action_text}" quotes the table row
    applies: Predicate
    finding: Sentence  # what the answers show, as a clause
    action: Action | None  # what it decides; None: the table's action stands
    advice: Sentence | None = None      # added when this rule decides
    outweighed: Sentence | None = None  # replaces the generic sentence when a rule above wins

    def quote(self, row: TableRow) -> str:
        return self.spec.format(row=row)


_ROLLBACK_WHEN = "Rollback when"
_FIX_FORWARD_WHEN = "Fix forward when"


def _minutes(a: Assessment) -> int:
    return a.minutes_to_fix if a.minutes_to_fix is not None else -1


def _data_loss_warning(a: Assessment, row: TableRow) -> str:
    restore, migrations = TITLES[ProcedureName.RESTORE], TITLES[ProcedureName.MIGRATIONS]
    return ("WARNING: THIS ROLLBACK LOSES DATA. The spec says fix forward when a rollback "
            "would cause data loss, but a CRITICAL issue is rolled back anyway. Decide what "
            f"you give up: a full restore from backup (Procedure {restore.number}) loses every "
            "write since the backup was taken; a migration rollback (Procedure "
            f"{migrations.number}) keeps the rows but drops what the new migrations added. "
            "Take a backup of the database as it is now before anything runs.")


def _keep_limit(a: Assessment, row: TableRow) -> str:
    if row.limit_minutes is None:
        return "If the fix does not work, roll back."
    return (f"Keep the {row.limit_minutes}-minute limit: if it is not fixed by then, "
            "roll back.")


RULES: tuple[Rule, ...] = (
    Rule(
        name="the table's CRITICAL rating",
        side=Side.ROLLBACK, source=_ROLLBACK_WHEN, spec="Issue is critical and affects users",
        applies=lambda a, row: row.urgency is Urgency.CRITICAL,
        finding=lambda a, row: (
            "the issue is critical and affects users" if a.users_affected else
            "the issue is critical, and the table rolls it back even before users notice"),
        action=None,
    ),
    Rule(
        name="the data-loss rule",
        side=Side.FIX_FORWARD, source=_FIX_FORWARD_WHEN, spec="Rollback would cause data loss",
        applies=lambda a, row: a.data_loss_if_rolled_back,
        finding=lambda a, row: "a rollback would lose data",
        action=Action.FIX_FORWARD,
        advice=lambda a, row: ("If the issue turns critical before the fix is out, assess "
                               "again: a critical issue is rolled back even at that cost."),
        outweighed=_data_loss_warning,
    ),
    Rule(
        name="the table's minor-bug row",
        side=Side.FIX_FORWARD, source=_FIX_FORWARD_WHEN, spec="Issue is minor",
        applies=lambda a, row: a.scenario is Scenario.MINOR_BUG,
        finding=lambda a, row: "the issue is minor and users have a workaround",
        action=Action.FIX_FORWARD,
    ),
    Rule(
        name="the unknown root cause",
        side=Side.ROLLBACK, source=_ROLLBACK_WHEN, spec="Root cause unknown",
        applies=lambda a, row: not a.root_cause_known,
        finding=lambda a, row: "nobody knows the root cause yet",
        action=Action.ROLLBACK_NOW,
    ),
    Rule(
        name="the 30-minute rule",
        side=Side.ROLLBACK, source=_ROLLBACK_WHEN, spec="Fix would take > 30 minutes",
        applies=lambda a, row: _minutes(a) > LONG_FIX_MINUTES,
        finding=lambda a, row: f"the fix is expected to take {a.minutes_to_fix} minutes",
        action=Action.ROLLBACK_NOW,
    ),
    Rule(
        name="the table's time limit",
        side=Side.ROLLBACK, source="When to Rollback", spec="{row.action_text}",
        # Past 30 minutes the 30-minute rule above already says it.
        applies=lambda a, row: (row.limit_minutes is not None
                                and row.limit_minutes < _minutes(a) <= LONG_FIX_MINUTES),
        finding=lambda a, row: (f"the fix is expected to take {a.minutes_to_fix} minutes, "
                                f"past this scenario's {row.limit_minutes}-minute limit"),
        action=Action.ROLLBACK_NOW,
    ),
    Rule(
        name="the quick-fix rule",
        side=Side.FIX_FORWARD, source=_FIX_FORWARD_WHEN,
        spec="Fix is quick (< 15 minutes)” and “Root cause identified",
        # Only decides when the root cause is known: the unknown-root-cause rule comes first.
        applies=lambda a, row: (a.minutes_to_fix is not None
                                and a.minutes_to_fix < QUICK_FIX_MINUTES),
        finding=lambda a, row: (f"a fix is expected in {a.minutes_to_fix} minutes"
                                + (" and the root cause is identified"
                                   if a.root_cause_known else "")),
        action=Action.FIX_FORWARD,
        advice=_keep_limit,
    ),
)


def assess(a: Assessment) -> Verdict:
    """The spec's verdict for these answers, with the rules that decided it as sentences."""
    row = DECISION_TABLE[a.scenario]
    urgency = row.urgency or (Urgency.HIGH if a.users_affected else Urgency.LOW)
    reasons = [_table_reason(a, row, urgency)]

    matched = [rule for rule in RULES if rule.applies(a, row)]
    decider = matched[0] if matched else None
    action = row.action if decider is None or decider.action is None else decider.action
    if decider is not None:
        reasons.append(f"{_VERB[action]}: {decider.finding(a, row)} "
                       f"(spec, “{decider.source}”: “{decider.quote(row)}”).")
        if decider.advice is not None:
            reasons.append(decider.advice(a, row))
    elif row.limit_minutes is not None:
        reasons.append(_clock(a, row.limit_minutes))
    for rule in matched[1:]:
        reasons.append(_also(rule, a, row, decider=matched[0], side=_SIDE_OF[action]))

    if _SIDE_OF[action] is not Side.FIX_FORWARD and a.previous_version_known_stable:
        reasons.append("The previous version is known stable (spec, “Rollback when”: "
                       "“Previous version is known stable”).")
    if not a.previous_version_known_stable:
        reasons.append("Warning: the previous version is not known to be stable. The spec "
                       "rolls back to a known-stable version; check how the previous one ran, "
                       "or pick an older one that was good, or a rollback may swap this "
                       "problem for another.")

    procedure = None if action is Action.FIX_FORWARD else row.procedure
    if procedure is ProcedureName.SIMPLE and a.data_loss_if_rolled_back:
        procedure = ProcedureName.MIGRATIONS
        reasons.append(f"Procedure {TITLES[ProcedureName.SIMPLE].number} is for code-only "
                       "changes with no database changes, and this rollback touches data, so "
                       "the migration rollback is recommended.")
    if procedure is not None:
        reasons.append(_procedure_reason(procedure))
    return Verdict(action=action, urgency=urgency, reasons=tuple(reasons),
                   recommended_procedure=procedure)


def _table_reason(a: Assessment, row: TableRow, urgency: Urgency) -> str:
    if a.scenario is Scenario.OTHER:
        who = "users are affected" if a.users_affected else "no users are affected"
        return ("This scenario is not in the spec's table, so the “Rollback vs. Fix Forward” "
                f"lists decide; urgency is {urgency.name} because {who}.")
    return (f"The spec's table: “{row.scenario_text}” → “{row.action_text}”, "
            f"urgency {urgency.name}.")


def _clock(a: Assessment, limit: int) -> str:
    if a.minutes_to_fix is None:
        return (f"Nobody knows yet how long a fix will take: start a {limit}-minute clock now "
                "and roll back when it runs out.")
    return (f"The fix is expected to take {a.minutes_to_fix} minutes, within the "
            f"{limit}-minute limit: try it, and roll back if it is not fixed by then.")


def _also(rule: Rule, a: Assessment, row: TableRow, *, decider: Rule, side: Side | None) -> str:
    """A matching rule below the decider: it agrees, or it is outweighed (and says by what)."""
    quoted = f"(spec, “{rule.source}”: “{rule.quote(row)}”)"
    if rule.side is side:
        return f"Also, {rule.finding(a, row)} {quoted}."
    if rule.outweighed is not None:
        return rule.outweighed(a, row)
    finding = rule.finding(a, row)
    return (f"{finding[:1].upper()}{finding[1:]}, which points to {rule.side.value} "
            f"{quoted}, but {decider.name} takes precedence.")


def _procedure_reason(procedure: ProcedureName) -> str:
    t = TITLES[procedure]
    return f"Recommended procedure: {t.reference} (spec, “Use when”: “{t.use_when}”)."
