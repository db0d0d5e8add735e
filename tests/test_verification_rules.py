"""The Extended check's judgements: rows lost since the rollback, and how many warnings."""

import pytest

from bot.post_rollback.verification import judge_row_counts, judge_warnings

BASE = {"users": 10_000, "orders": 250}


def test_unchanged_or_growing_tables_pass_and_show_their_counts() -> None:
    assert judge_row_counts(BASE, {"users": 10_000, "orders": 260}, max_loss_ratio=0.01) == (
        True, "users 10000, orders 260")


def test_a_small_loss_passes_with_a_note() -> None:
    ok, detail = judge_row_counts(BASE, {"users": 9_950, "orders": 250}, max_loss_ratio=0.01)
    assert ok
    assert detail == ("users 9950, orders 250; small loss within 1%: users 10000 → 9950 "
                      "(lost 50, 0.5%)")


def test_a_loss_over_the_ratio_fails_naming_the_table() -> None:
    ok, detail = judge_row_counts(BASE, {"users": 10_000, "orders": 240}, max_loss_ratio=0.01)
    assert not ok
    assert detail == ("rows lost, more than 1% of a table's rows since the rollback: "
                      "orders 250 → 240 (lost 10, 4%). Now: users 10000, orders 240")


def test_exactly_the_ratio_still_passes_and_zero_tolerates_nothing() -> None:
    assert judge_row_counts({"t": 100}, {"t": 99}, max_loss_ratio=0.01)[0]
    assert not judge_row_counts({"t": 100}, {"t": 99}, max_loss_ratio=0.0)[0]


def test_an_emptied_table_fails() -> None:
    ok, detail = judge_row_counts({"orders": 8}, {"orders": 0}, max_loss_ratio=0.01)
    assert not ok and "orders 8 → 0 (lost 8, 100%)" in detail


def test_a_table_no_longer_counted_fails() -> None:
    ok, detail = judge_row_counts(BASE, {"users": 10_000}, max_loss_ratio=0.5)
    assert not ok and "orders: 250 → not counted" in detail


def test_without_a_baseline_there_is_nothing_to_lose() -> None:
    assert judge_row_counts({}, {"users": 3}, max_loss_ratio=0.01) == (True, "users 3")


@pytest.mark.parametrize(("found", "ok"), [(0, True), (20, True), (21, False)])
def test_warnings_over_the_maximum_fail(found: int, ok: bool) -> None:
    lines = [f"api_1 | WARN slow query #{n}" for n in range(found)]
    passed, detail = judge_warnings(lines, max_lines=20)
    assert passed is ok
    assert detail.startswith(f"{found} warning line(s) since the rollback (at most 20 allowed)")
    if not ok:
        assert detail.endswith("e.g. api_1 | WARN slow query #20")
