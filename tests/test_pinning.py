"""What was approved is what runs: previous skips quarantine, the pin refuses what changed."""

from __future__ import annotations

from datetime import UTC, datetime

from bot.autorollback.deploys import Quarantined
from bot.edges.host_facts import newest_migrations, previous_release, skipped_text
from bot.model import Backup, ImageTag, Pinned, ProcedureName, RollbackRequest
from bot.pinning import pin_checks, pinned_request
from bot.versions import try_parse_version

T0 = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
X = Backup(name="azora_prod_20261127T020000.sql.gz",
           path="/backups/azora_prod_20261127T020000.sql.gz", size=4096, modified=T0)


def tags(*names: str) -> list[ImageTag]:
    return [ImageTag(repository="azora-api", tag=n, version=try_parse_version(n), created=T0,
                     image_id=f"sha256:{i}") for i, n in enumerate(names)]


def quarantined(version: str, by: str = "U0BOB", reason: str = "orders lost") -> Quarantined:
    return Quarantined("production", version, by, reason, T0)


def test_previous_skips_quarantined_versions_and_says_who_and_why() -> None:
    found, skipped = previous_release(tags("latest", "v1.2.3", "v1.2.2", "v1.2.1"), "v1.2.3",
                                      [quarantined("v1.2.2")])
    assert found is not None and found.tag == "v1.2.1"
    assert skipped_text(skipped) == ("skipped v1.2.2: quarantined by U0BOB on 2026-11-27 "
                                     "02:00 UTC (orders lost)")


def test_previous_without_quarantine_is_the_highest_release_below() -> None:
    found, skipped = previous_release(tags("v1.2.1", "v1.2.3", "v1.2.2", "v1.3.0-rc.1"),
                                      "v1.2.3", [quarantined("v1.2.3"), quarantined("v1.0.0")])
    assert found is not None and found.tag == "v1.2.2" and skipped == ()


def test_when_everything_below_is_quarantined_there_is_no_previous() -> None:
    found, skipped = previous_release(tags("v1.2.3", "v1.2.2"), "v1.2.3",
                                      [quarantined("v1.2.2")])
    assert found is None and [q.version for q in skipped] == ["v1.2.2"]


def restore() -> RollbackRequest:
    return RollbackRequest(environment="production", procedure=ProcedureName.RESTORE,
                           target=None, requested_by="U0ALICE")


def test_the_card_pins_the_resolved_target_and_the_shown_backup() -> None:
    pinned = pinned_request(restore(), target="v1.2.2", backup=X)
    assert pinned.pinned == Pinned(target="v1.2.2", backup=X)
    assert pinned.backup == X.name and pinned.target is None  # "previous" is re-checked
    simple = RollbackRequest(environment="production", procedure=ProcedureName.MIGRATIONS,
                             target=None, requested_by="U0ALICE")
    # a migrations run only checks that some backup exists: a newer one is no reason to refuse
    assert pinned_request(simple, target="v1.2.2", backup=X).pinned == Pinned("v1.2.2", None)
    assert pinned_request(simple, target="", backup=X).pinned is None


def test_the_same_backup_and_target_pass() -> None:
    [check] = pin_checks(Pinned("v1.2.2", X), target="v1.2.2", backup=X)
    assert check.ok and X.name in check.detail


def test_a_backup_rewritten_since_the_card_refuses_and_says_what_changed() -> None:
    touched = Backup(name=X.name, path=X.path, size=5000,
                     modified=datetime(2026, 11, 28, 21, 40, 3, tzinfo=UTC))
    [check] = pin_checks(Pinned("v1.2.2", X), target="v1.2.2", backup=touched)
    assert not check.ok
    assert check.detail == (
        f"backup {X.name} changed since the card was approved (size 4096 → 5000 bytes; "
        "modified 2026-11-27 02:00:00 UTC → 2026-11-28 21:40:03 UTC); nothing was run; type "
        "the command again for a fresh card")


def test_a_removed_backup_or_a_moved_previous_refuses() -> None:
    checks = pin_checks(Pinned("v1.2.2", X), target="v1.2.1", backup=None)
    assert [c.ok for c in checks] == [False, False]
    assert "the card approved v1.2.2, but the target now resolves to v1.2.1" in checks[0].detail
    assert f"backup {X.name} is gone since the card was approved" in checks[1].detail
    assert pin_checks(None, target="v1.2.1", backup=None) == ()


PSQL_TABLE = """ id |          name           |      executed_at
----+-------------------------+------------------------
  2 | 002_create_orders       | 2026-09-10 10:00:00+00
  3 | 003_add_orders_discount | 2026-09-20 10:00:00+00
  1 | 001_create_users        | 2026-09-01 10:00:00+00
(3 rows)
"""


def test_the_migrations_to_undo_are_the_newest_rows() -> None:
    assert newest_migrations(PSQL_TABLE, 1) == (
        "003_add_orders_discount (applied 2026-09-20 10:00:00+00)",)
    assert [m.split()[0] for m in newest_migrations(PSQL_TABLE, 2) or ()] == [
        "003_add_orders_discount", "002_create_orders"]


def test_output_that_is_no_table_is_not_guessed_at() -> None:
    assert newest_migrations("UP   004_add_index.js\nUP   003_x.js\n", 1) is None
    assert newest_migrations(" id | name\n----+------\n(0 rows)\n", 1) == ()


def test_a_migration_applied_since_the_card_refuses() -> None:
    shown = ("003_add_orders_discount (applied 2026-09-20 10:00:00+00)",)
    request = RollbackRequest(environment="production", procedure=ProcedureName.MIGRATIONS,
                              target=None, requested_by="U0ALICE")
    pinned = pinned_request(request, target="v1.2.2", backup=X, migrations=shown).pinned
    assert pinned == Pinned("v1.2.2", None, shown)
    assert pin_checks(pinned, target="v1.2.2", backup=X, migrations=shown) == ()
    [check] = pin_checks(pinned, target="v1.2.2", backup=X,
                         migrations=("004_add_index (applied 2026-11-28 21:00:00+00)",))
    assert not check.ok and check.detail.startswith(
        "the card named 003_add_orders_discount (applied 2026-09-20 10:00:00+00) to undo, but "
        "migrate_down would now undo 004_add_index")
