"""Reading and changing the service's image tag in a docker-compose file, as text.

This replaces the spec's ``nano docker-compose.yml``. The file is edited line by line, not
re-serialised, so comments, ordering and formatting survive exactly; only the tag changes. A tag
written as one variable (``azora-api:${API_VERSION}``) is read here and changed in ``.env``
(bot/procedures/release_files.py), never on this line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from bot.errors import ComposeEditError

_KEY = re.compile(r"^(?P<indent>[ ]*)(?P<q>[\"']?)(?P<key>[A-Za-z0-9_.-]+)(?P=q)[ ]*:[ ]*(?:#.*)?$")
_IMAGE = re.compile(
    r"^(?P<indent>[ ]+)image[ ]*:[ ]*(?P<q>[\"']?)(?P<ref>[^\"'\s#]+)(?P=q)(?P<rest>[ ]*(?:#.*)?)$"
)


# `repo:$VAR`, `repo:${VAR}`, `repo:${VAR:-default}`, `${VAR-default}`, `${VAR:?err}`, `${VAR?err}`:
# compose 1.29's interpolation (config/interpolation.py), one variable making the whole tag.
_VARIABLE_TAG = re.compile(
    r"^(?P<repo>[^$]+):\$(?:(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
    r"|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<sep>:?[-?])(?P<word>[^}]*))?\})$"
)


@dataclass(frozen=True)
class TagVariable:
    """A tag taken from a variable: its name and compose's fallback form (``:-``, ``-``…)."""

    name: str
    sep: str = ""
    word: str = ""

    @property
    def written(self) -> str:
        return f"${{{self.name}{self.sep}{self.word}}}"

    @property
    def fallback(self) -> str | None:
        """The default compose uses when the variable is unset (``:-``/``-`` forms only)."""
        return self.word if self.sep in (":-", "-") else None

    def resolve(self, values: Mapping[str, str]) -> str | None:
        """The tag compose makes of it from ``values``; None when compose would have none."""
        value = values.get(self.name)
        if self.sep == ":-":
            return value or self.word or None
        if self.sep == "-":
            return (self.word if value is None else value) or None
        return value or None  # `${VAR}`, `?`, `:?`: an unset or empty variable is no tag


@dataclass(frozen=True)
class ImageLine:
    """Where the service's image is named, and what it says."""

    line_index: int
    repository: str
    tag: str  # as written: "v1.2.3", or "${API_VERSION}" when ``variable`` is set
    variable: TagVariable | None = None


@dataclass(frozen=True)
class TagSwitch:
    """The result of switching the tag: the new text and what it replaced."""

    text: str
    old_tag: str
    new_tag: str


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _is_content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _block_end(lines: list[str], start: int, indent: int) -> int:
    """Index after the last line that is nested deeper than ``indent`` below ``start``."""
    end = start + 1
    while end < len(lines):
        if _is_content(lines[end]) and _indent(lines[end]) <= indent:
            break
        end += 1
    return end


def _service_block(lines: list[str], service: str) -> tuple[int, int]:
    start, end, base = 0, len(lines), -1
    for i, line in enumerate(lines):
        m = _KEY.match(line)
        if m and m["indent"] == "" and m["key"] == "services":
            start, end, base = i + 1, _block_end(lines, i, 0), 0
            break
    # Services are the keys one level below `services:` (or top-level keys in the v1 format).
    child_indent: int | None = None
    for i in range(start, end):
        line = lines[i]
        if not _is_content(line):
            continue
        ind = _indent(line)
        if base == 0 and ind == 0:
            continue
        if child_indent is None:
            child_indent = ind
        m = _KEY.match(line)
        if ind == child_indent and m and m["key"] == service:
            return i, _block_end(lines, i, ind)
    raise ComposeEditError(f"the compose file has no service '{service}'")


def find_image_line(text: str, *, service: str, image: str) -> ImageLine:
    """Locate ``image: <image>:<tag>`` directly under ``service``."""
    lines = text.split("\n")
    start, end = _service_block(lines, service)
    service_indent = _indent(lines[start])
    child_indent: int | None = None
    for i in range(start + 1, end):
        line = lines[i]
        if not _is_content(line):
            continue
        ind = _indent(line)
        child_indent = ind if child_indent is None else child_indent
        if ind != child_indent or ind <= service_indent:
            continue
        m = _IMAGE.match(line)
        if m is None:
            continue
        ref = m["ref"]
        if "$" in ref:
            return _variable_line(i, ref, service=service, image=image)
        if "@" in ref:
            raise ComposeEditError(
                f"service '{service}' pins its image by digest ({ref}); rollbot only switches tags"
            )
        repository, sep, tag = ref.rpartition(":")
        if not sep or "/" in tag:
            repository, tag = ref, "latest"
        if repository != image and not repository.endswith("/" + image):
            raise ComposeEditError(
                f"service '{service}' runs image '{repository}', not the configured '{image}'"
            )
        return ImageLine(line_index=i, repository=repository, tag=tag)
    raise ComposeEditError(f"service '{service}' has no 'image:' line in the compose file")


def _variable_line(index: int, ref: str, *, service: str, image: str) -> ImageLine:
    v = _VARIABLE_TAG.match(ref)
    if v is None:
        raise ComposeEditError(
            f"service '{service}' names its image as '{ref}'; rollbot switches a tag written "
            f"out ({image}:v1.2.3) or taken whole from one variable ({image}:${{VERSION}})")
    repository = v["repo"]
    if repository != image and not repository.endswith("/" + image):
        raise ComposeEditError(
            f"service '{service}' runs image '{repository}', not the configured '{image}'")
    variable = TagVariable(name=v["bare"] or v["name"], sep=v["sep"] or "", word=v["word"] or "")
    return ImageLine(line_index=index, repository=repository, tag=variable.written,
                     variable=variable)


def switch_image_tag(text: str, *, service: str, image: str, new_tag: str) -> TagSwitch:
    """Return the compose text with ``service``'s image tag replaced by ``new_tag``."""
    found = find_image_line(text, service=service, image=image)
    if found.variable is not None:
        # Overwriting `${VAR}` with a literal would leave .env naming the bad release, and the
        # next deploy that only changes .env would silently do nothing.
        raise ComposeEditError(
            f"service '{service}' takes its tag from {found.tag}; the variable is changed in "
            ".env, not the compose line")
    lines = text.split("\n")
    m = _IMAGE.match(lines[found.line_index])
    assert m is not None  # find_image_line matched this very line
    q = m["q"]
    lines[found.line_index] = (
        f"{m['indent']}image: {q}{found.repository}:{new_tag}{q}{m['rest']}"
    )
    return TagSwitch(text="\n".join(lines), old_tag=found.tag, new_tag=new_tag)
