"""What was approved is what runs: the card's resolved target and backup, pinned and re-checked.

A card shows "previous" resolved to a version, "newest backup" resolved to a file and the
migrations `migrate_down` will undo. Between the card and the last confirmation a newer backup may
land (the nightly dump of a corrupted database), the versions on the host may change or another
migration may be applied. The pin keeps what was shown; the run's pre-flight
refuses when it no longer finds exactly that.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from bot.model import Backup, Check, Pinned, ProcedureName, RollbackRequest

_AGAIN = "nothing was run; type the command again for a fresh card"


def pinned_request(request: RollbackRequest, *, target: str, backup: Backup | None,
                   migrations: tuple[str, ...] = ()) -> RollbackRequest:
    """The request as pre-flight resolved it: the run must find this target and this backup."""
    if not target:
        return request  # nothing resolved: the card has no button, there is nothing to pin
    shown = backup if request.procedure is ProcedureName.RESTORE else None
    undo = migrations if request.procedure is ProcedureName.MIGRATIONS else ()
    return replace(request, backup=shown.name if shown else request.backup,
                   pinned=Pinned(target=target, backup=shown, migrations=undo))


def pin_checks(pinned: Pinned | None, *, target: str, backup: Backup | None,
               migrations: tuple[str, ...] = ()) -> tuple[Check, ...]:
    """Refusing checks when the run's pre-flight finds something else than the card showed."""
    if pinned is None:
        return ()
    checks = []
    if target != pinned.target:
        now = f"resolves to {target}" if target else "cannot be resolved"
        checks.append(Check("Approved target", False,
                            f"the card approved {pinned.target}, but the target now {now} "
                            f"(the versions on the host changed); {_AGAIN}"))
    shown = pinned.backup
    if shown is not None:
        if backup is None or backup.name != shown.name:
            checks.append(Check("Approved backup", False,
                                f"backup {shown.name} is gone since the card was approved; "
                                f"{_AGAIN}"))
        elif (backup.size, backup.modified) != (shown.size, shown.modified):
            checks.append(Check("Approved backup", False,
                                f"backup {shown.name} changed since the card was approved "
                                f"({_difference(shown, backup)}); {_AGAIN}"))
        else:
            checks.append(Check("Approved backup", True,
                                f"{shown.name} is the file the card showed ({shown.size} bytes, "
                                f"modified {_at(shown.modified)})"))
    if pinned.migrations and migrations != pinned.migrations:
        now = ", ".join(migrations) or "nothing it can name"
        checks.append(Check("Approved migrations", False,
                            f"the card named {', '.join(pinned.migrations)} to undo, but "
                            f"migrate_down would now undo {now} (the migrations changed); "
                            f"{_AGAIN}"))
    return tuple(checks)


def _difference(shown: Backup, now: Backup) -> str:
    parts = []
    if shown.size != now.size:
        parts.append(f"size {shown.size} → {now.size} bytes")
    if shown.modified != now.modified:
        parts.append(f"modified {_at(shown.modified)} → {_at(now.modified)}")
    return "; ".join(parts)


def _at(when: datetime) -> str:
    return f"{when:%Y-%m-%d %H:%M:%S} UTC"


def pinned_json(pinned: Pinned | None) -> dict[str, Any] | None:
    """The pin as stored with the pending rollback (mtime exact to the microsecond)."""
    if pinned is None:
        return None
    b = pinned.backup
    return {"target": pinned.target, "migrations": list(pinned.migrations),
            "backup": None if b is None else {"name": b.name, "path": b.path, "size": b.size,
                                              "modified": b.modified.isoformat()}}


def pinned_from_json(data: dict[str, Any] | None) -> Pinned | None:
    if not data:
        return None
    b = data.get("backup")
    backup = None if b is None else Backup(name=b["name"], path=b["path"], size=int(b["size"]),
                                           modified=datetime.fromisoformat(b["modified"]))
    return Pinned(target=str(data["target"]), backup=backup,
                  migrations=tuple(str(m) for m in data.get("migrations", ())))
