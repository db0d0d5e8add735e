"""What names a release's image tags on a host: the compose file, and ``.env`` for ``${VAR}`` tags.

Every reader of "the version the compose file names" (pre-flight, the post-lock re-look, the
switch step, put-back, resume and recovery) resolves tags here, the way docker-compose 1.29 does:
the variable's value from the project directory's ``.env`` (or ``--env-file``), else the
``${VAR:-default}`` fallback. The shell's environment comes before ``.env`` for compose, so a tag
variable set there is refused by pre-flight (editing ``.env`` would change nothing).
"""

from __future__ import annotations

import posixpath
import shlex
from dataclasses import dataclass

from bot.config import ComposeConfig, EnvironmentConfig
from bot.errors import ComposeEditError, HostError
from bot.model import Check
from bot.ports import RemoteHost
from bot.procedures.compose_file import ImageLine, find_image_line, switch_image_tag
from bot.procedures.env_file import env_values, set_env_value
from bot.shell import join

_SHELL_TIMEOUT_S = 30.0


def env_file_path(compose: ComposeConfig) -> str:
    """Where compose reads ``.env``: ``--env-file``, else the project directory's ``.env``.

    Commands run in the compose file's directory (bot/procedures/commands.py), so a relative
    ``--env-file`` or ``--project-directory`` is relative to it, as compose takes it.
    """
    words = shlex.split(compose.command)
    env_file = project_dir = None
    for i, word in enumerate(words):
        nxt = words[i + 1] if i + 1 < len(words) else None
        if word == "--env-file" and nxt:
            env_file = nxt
        elif word.startswith("--env-file="):
            env_file = word.split("=", 1)[1]
        elif word == "--project-directory" and nxt:
            project_dir = nxt
        elif word.startswith("--project-directory="):
            project_dir = word.split("=", 1)[1]
    base = compose.directory
    if env_file:
        return posixpath.normpath(posixpath.join(base, env_file))
    return posixpath.normpath(posixpath.join(base, project_dir or ".", ".env"))


@dataclass(frozen=True)
class ServiceImage:
    """One switched service: its image line, and the tag compose resolves it to."""

    service: str
    image: str
    line: ImageLine
    tag: str | None  # None: a ${VAR} that is set nowhere compose reads it (no tag at all)

    @property
    def shown(self) -> str:
        """The tag for messages: resolved, else as written."""
        return self.tag or self.line.tag


@dataclass(frozen=True)
class ReleaseFiles:
    """The compose file and ``.env`` as read, and each listed service's tag in them."""

    compose_file: str
    compose_text: str
    env_file: str
    env_text: str | None  # None: there is no .env
    services: tuple[ServiceImage, ...]

    @property
    def tag(self) -> str:
        """What the file names for the first service (the one-service form's service)."""
        return self.services[0].shown

    @property
    def tags(self) -> dict[str, str]:
        return {s.service: s.shown for s in self.services}

    @property
    def variables(self) -> tuple[str, ...]:
        names = (s.line.variable.name for s in self.services if s.line.variable is not None)
        return tuple(dict.fromkeys(names))

    def names(self, tag: str) -> bool:
        """Whether every listed service's tag resolves to ``tag``."""
        return all(s.tag == tag for s in self.services)

    def describe(self) -> str:
        """"v1.2.3", or per service when they differ: "api: v1.2.3, worker: v1.2.2"."""
        shown = {s.shown for s in self.services}
        if len(shown) == 1:
            return self.tag
        return ", ".join(f"{s.service}: {s.shown}" for s in self.services)


def parse_release(env: EnvironmentConfig, *, compose_text: str, env_text: str | None,
                  env_file: str | None = None) -> ReleaseFiles:
    """Each listed service's image line in ``compose_text``, its tag resolved with ``env_text``."""
    values = env_values(env_text) if env_text is not None else {}
    services = []
    for service, image in env.services.items():
        line = find_image_line(compose_text, service=service, image=image)
        tag = line.variable.resolve(values) if line.variable is not None else line.tag
        services.append(ServiceImage(service=service, image=image, line=line, tag=tag))
    return ReleaseFiles(compose_file=env.compose.file, compose_text=compose_text,
                        env_file=env_file or env_file_path(env.compose), env_text=env_text,
                        services=tuple(services))


async def read_env_text(host: RemoteHost, path: str) -> str | None:
    """``.env``'s text, or None when there is none (compose then reads no file)."""
    try:
        return await host.read_file(path)
    except HostError as exc:
        if "does not exist" in str(exc):
            return None
        raise


async def read_release(host: RemoteHost, env: EnvironmentConfig) -> ReleaseFiles:
    """The compose file (and ``.env`` when a tag is a variable) as the host has them now."""
    compose_text = await host.read_file(env.compose.file)
    path = env_file_path(env.compose)
    lines = [find_image_line(compose_text, service=s, image=i) for s, i in env.services.items()]
    env_text = (await read_env_text(host, path)
                if any(ln.variable is not None for ln in lines) else None)
    return parse_release(env, compose_text=compose_text, env_text=env_text, env_file=path)


@dataclass(frozen=True)
class ReleaseSwitch:
    """The switch as texts: None where a file does not change."""

    compose_text: str | None
    env_text: str | None
    changes: tuple[str, ...]  # one line per change, for the step's output


def switch_release(release: ReleaseFiles, target: str) -> ReleaseSwitch:
    """Every listed service on ``target``: literal tags in the compose file, ${VAR} in .env."""
    compose, env_text = release.compose_text, release.env_text
    changes: list[str] = []
    done_variables: set[str] = set()
    for s in release.services:
        var = s.line.variable
        if var is None:
            compose = switch_image_tag(compose, service=s.service, image=s.image,
                                       new_tag=target).text
            changes.append(f"{release.compose_file}: image {s.line.repository}:{s.line.tag} -> "
                           f"{s.line.repository}:{target}")
            continue
        if var.name in done_variables:
            continue
        if env_text is None:
            raise ComposeEditError(
                f"{release.env_file} does not exist, so it cannot set {var.name} for "
                f"{s.service}'s {s.line.repository}:{var.written}")
        env_text = set_env_value(env_text, key=var.name, value=target, path=release.env_file)
        done_variables.add(var.name)
        changes.append(f"{release.env_file}: {var.name}={s.shown} -> {var.name}={target} "
                       f"({s.service}'s image {s.line.repository}:{var.written}; the compose "
                       "line is left as is)")
    return ReleaseSwitch(
        compose_text=compose if compose != release.compose_text else None,
        env_text=env_text if env_text != release.env_text else None,
        changes=tuple(changes))


def shell_variables_command(names: tuple[str, ...]) -> str:
    """Which of ``names`` the SSH session's environment sets (names only, never the values)."""
    inner = 'for n in "$@"; do if printenv "$n" >/dev/null; then echo "set $n"; fi; done; true'
    return join("sh", "-c", inner, "sh", *names)


async def shell_variables(host: RemoteHost, names: tuple[str, ...]) -> frozenset[str]:
    """Which of ``names`` the SSH session's environment sets, in one command (none: no command)."""
    if not names:
        return frozenset()
    out = await host.run(shell_variables_command(names), timeout=_SHELL_TIMEOUT_S)
    return frozenset(ln.split(" ", 1)[1] for ln in out.output.splitlines()
                     if ln.startswith("set "))


async def tag_variables_check(host: RemoteHost, release: ReleaseFiles) -> Check | None:
    """Pre-flight: each ${VAR} tag is set in .env, and not by the shell (which compose prefers).

    None when no listed service takes its tag from a variable.
    """
    in_shell = await shell_variables(host, release.variables)
    return tag_variables_verdict(host.name, release, in_shell)


def tag_variables_verdict(host_name: str, release: ReleaseFiles, in_shell: frozenset[str]
                          ) -> Check | None:
    """The tag-variable check from what was read; ``in_shell``: the names the shell sets."""
    names = release.variables
    if not names:
        return None
    where = f"on {host_name}"
    shell_set = [n for n in names if n in in_shell]
    if shell_set:
        return Check("Image tag variable", False,
                     f"{where}, {', '.join(shell_set)} is set in the SSH session's environment, "
                     f"which compose reads before {release.env_file}, so changing .env would "
                     "change nothing; remove it from the user's shell profile on the host")
    values = env_values(release.env_text) if release.env_text is not None else {}
    for s in release.services:
        var = s.line.variable
        if var is None:
            continue
        image = f"{s.line.repository}:{var.written}"
        if var.name not in values:
            fallback = (f" (compose falls back to '{var.fallback}'; rollbot changes the "
                        "version in .env and adds no line: set it there first)"
                        if var.fallback else "")
            exists = "" if release.env_text is not None else " (there is no such file)"
            return Check("Image tag variable", False,
                         f"{where}, {s.service}'s image is {image}, but {var.name} is set neither "
                         f"in {release.env_file}{exists} nor in the SSH session's environment"
                         f"{fallback}")
        if s.tag is None:
            return Check("Image tag variable", False,
                         f"{where}, {var.name} is empty in {release.env_file}, so {s.service}'s "
                         f"image {image} has no tag")
        if "$" in values[var.name]:
            return Check("Image tag variable", False,
                         f"{where}, {var.name} in {release.env_file} refers to another "
                         f"variable ({values[var.name]}); rollbot changes a version written out")
    said = ", ".join(f"{n}={values[n]}" for n in names)
    return Check("Image tag variable", True,
                 f"{said} in {release.env_file} {where} (the compose file takes the tag from "
                 "it; rollbot changes it there)")
