"""A person types a version; only exactly vX.Y.Z[-pre] ever reaches a shell, and always quoted."""

import shlex
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.errors import InvalidInput
from bot.shell import file_name, join, quote, sql_identifier
from bot.versions import Version, parse_version


@pytest.mark.parametrize("text", ["v1.2.2", "v0.0.0", "v10.20.30", "v1.3.0-rc.1"])
def test_release_versions_are_accepted(text: str) -> None:
    assert str(parse_version(text)) == text


@pytest.mark.parametrize("text", [
    "1.2.2", "v1.2", "v1.2.2; rm -rf /", "v1.2.2 ", " v1.2.2", "v01.2.2", "latest",
    "v1.2.2\n", "v1.2.2$(id)", "v1.2.2`id`", "", "V1.2.2", "v1.2.2-", "v1.2.2-rc..1",
])
def test_anything_else_is_refused_with_a_sentence(text: str) -> None:
    with pytest.raises(InvalidInput, match="not a release version"):
        parse_version(text)


def test_versions_order_like_semver() -> None:
    vs = ["v1.2.10", "v1.2.2", "v1.3.0-rc.1", "v1.3.0", "v1.2.3", "v1.3.0-rc.2"]
    ordered = sorted(parse_version(v) for v in vs)
    assert [str(v) for v in ordered] == [
        "v1.2.2", "v1.2.3", "v1.2.10", "v1.3.0-rc.1", "v1.3.0-rc.2", "v1.3.0"]


@given(st.text(max_size=40))
def test_parser_never_accepts_shell_syntax(text: str) -> None:
    try:
        v = parse_version(text)
    except InvalidInput:
        return
    assert str(v) == text
    assert all(c.isalnum() or c in ".-" for c in text)


@given(st.builds(Version, st.integers(0, 999999), st.integers(0, 999999), st.integers(0, 999999)))
def test_every_printed_version_parses_back(v: Version) -> None:
    assert parse_version(str(v)) == v


@given(st.lists(st.text(st.characters(blacklist_characters="\0"), max_size=30), max_size=5))
def test_quoting_round_trips_through_a_real_shell(args: list[str]) -> None:
    assert shlex.split(join(*args)) == args


# Lone surrogates (category Cs) cannot be passed in argv at all: the OS takes bytes, not str.
@given(st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)),
               max_size=30))
def test_a_quoted_value_is_one_inert_word_for_sh(value: str) -> None:
    out = subprocess.run(["sh", "-c", f"printf %s {quote(value)}"], capture_output=True,
                         check=True)
    assert out.stdout.decode("utf-8", "surrogateescape") == value


@pytest.mark.parametrize("name", ["users; DROP TABLE x", 'a"b', "1abc", "", "a b"])
def test_sql_names_are_checked(name: str) -> None:
    with pytest.raises(InvalidInput):
        sql_identifier(name, what="Table")


@pytest.mark.parametrize("name", ["../etc/passwd", "-rf", ".hidden", "a/b", "x;y"])
def test_backup_file_names_are_checked(name: str) -> None:
    with pytest.raises(InvalidInput):
        file_name(name, what="Backup")
