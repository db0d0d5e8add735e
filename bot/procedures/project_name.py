"""The project name docker-compose will use, told from its command, the shell and .env unrun.

docker-compose 1.29 (compose/cli/command.py ``get_project_name``) takes ``-p``/``--project-name``,
else ``COMPOSE_PROJECT_NAME`` from the environment (the shell's, then the env file's: the project
directory's ``.env`` or ``--env-file``), else the project directory's basename, and lowercases the
result and drops every character outside ``[-_a-z0-9]``. Compose v2 reads the same sources (plus
the file's top-level ``name:``) but refuses a ``-p`` or ``COMPOSE_PROJECT_NAME`` that is not
already such a name and also strips leading ``-``/``_`` from a directory's. The host's binary may
be either, so a name is predicted only where both agree; anything else is "uncertain", and
pre-flight then asks compose itself (starting it costs 0.2-0.4 s of CPU per host).
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Collection
from dataclasses import dataclass

from bot.config import ComposeConfig
from bot.procedures.env_file import env_values

# What compose reads from the shell besides -p: the project's name, and which files (hence which
# directory) make the project. rollbot passes -f, which 1.29 prefers to COMPOSE_FILE; v2 versions
# have differed, so either one set is left to compose to resolve.
SHELL_VARIABLES = ("COMPOSE_PROJECT_NAME", "COMPOSE_FILE", "COMPOSE_PATH_SEPARATOR")
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
_TOP_LEVEL_NAME = re.compile(r"""^["']?name["']?[ \t]*:""", re.MULTILINE)
# Options of compose's own (before the subcommand) that do not bear on the project's name.
_INERT_FLAGS = frozenset({"--no-ansi", "--compatibility", "--verbose", "--tls", "--tlsverify",
                          "--skip-hostname-check"})
# Options with a value: the ones read here, and the inert ones (None).
_VALUE_OPTIONS = {"-p": "project", "--project-name": "project",
                  "--project-directory": "directory", "--env-file": "env_file",
                  "--ansi": None, "--log-level": None}


@dataclass(frozen=True)
class ProjectNaming:
    """Compose's project name with where it comes from; or, when uncertain, why it is."""

    name: str | None   # None: uncertain, ask compose
    source: str        # "from -p in compose.command", or why the name is uncertain

    @property
    def certain(self) -> bool:
        return self.name is not None


def _uncertain(why: str) -> ProjectNaming:
    return ProjectNaming(None, why)


def _as_written(value: str, source: str) -> ProjectNaming:
    if _NAME.fullmatch(value):
        return ProjectNaming(value, source)
    return _uncertain(f"'{value}' ({source.removeprefix('from ')}) is not written as a compose "
                      "project name ([a-z0-9_-]): 1.29 would change it, v2 refuse it")


def normalize_name(name: str) -> str:
    """docker-compose 1.29's ``normalize_name``: lowercase, keep only ``[-_a-z0-9]``."""
    return re.sub(r"[^-_a-z0-9]", "", name.lower())


@dataclass(frozen=True)
class _CommandReading:
    project: str | None = None            # -p / --project-name
    project_directory: str | None = None  # --project-directory
    env_file: str | None = None           # --env-file
    uncertain: str | None = None


def _read_command(command: str) -> _CommandReading:
    """compose.command's program and options, as far as they bear on the project's name."""
    try:
        words = shlex.split(command)
    except ValueError:
        return _CommandReading(uncertain="compose.command does not split into words")
    if words and posixpath.basename(words[0]) == "docker-compose":
        options = words[1:]
    elif len(words) >= 2 and posixpath.basename(words[0]) == "docker" and words[1] == "compose":
        options = words[2:]
    else:
        return _CommandReading(uncertain=f"compose.command ('{command}') is neither "
                                         "docker-compose nor docker compose")
    read: dict[str, str] = {}
    i = 0
    while i < len(options):
        word = options[i]
        key, eq, inline = word.partition("=")
        if word in _INERT_FLAGS:
            i += 1
            continue
        # A short option's "=" is part of its value to compose; "$" and "`" the shell expands.
        if key not in _VALUE_OPTIONS or (eq and not key.startswith("--")) or any(
                c in word for c in "$`"):
            return _CommandReading(uncertain=f"compose.command has '{word}', which rollbot "
                                             "does not read for the project's name")
        if eq:
            given, i = inline, i + 1
        elif i + 1 < len(options) and not any(c in options[i + 1] for c in "$`"):
            given, i = options[i + 1], i + 2
        else:
            return _CommandReading(uncertain=f"compose.command's {word} has no value rollbot "
                                             "can read")
        role = _VALUE_OPTIONS[key]
        if role is not None:
            if role in read:
                return _CommandReading(uncertain=f"compose.command gives {key} twice")
            read[role] = given
    return _CommandReading(project=read.get("project"),
                           project_directory=read.get("directory"),
                           env_file=read.get("env_file"))


def naming_from_command(compose: ComposeConfig) -> ProjectNaming | None:
    """The naming when the command alone decides it (-p, or unreadable); None: read on."""
    reading = _read_command(compose.command)
    if reading.uncertain is not None:
        return _uncertain(reading.uncertain)
    if reading.project is not None:
        return _as_written(reading.project, "from -p in compose.command")
    return None


def predict_project_name(compose: ComposeConfig, *, compose_text: str, env_text: str | None,
                         env_file: str, in_shell: Collection[str]) -> ProjectNaming:
    """The project compose will use, from what the host was read to hold.

    ``env_text``: the env file compose reads (``env_file``), None when there is none;
    ``in_shell``: which of ``SHELL_VARIABLES`` the SSH session's environment sets.
    """
    decided = naming_from_command(compose)
    if decided is not None:
        return decided
    shell = [n for n in SHELL_VARIABLES if n in in_shell]
    if shell:
        return _uncertain(f"{' and '.join(shell)} set in the SSH session's environment")
    if env_text is None and _read_command(compose.command).env_file is not None:
        # 1.29 stops when the file --env-file names is missing.
        return _uncertain(f"--env-file names {env_file}, which does not exist")
    # compose reads the file as utf-8-sig: a byte-order mark is not part of the first key.
    values = env_values(env_text.removeprefix("\ufeff")) if env_text is not None else {}
    files = [n for n in ("COMPOSE_FILE", "COMPOSE_PATH_SEPARATOR") if n in values]
    if files:
        return _uncertain(f"{' and '.join(files)} set in {env_file}")
    named = values.get("COMPOSE_PROJECT_NAME")
    if named is not None:
        if "$" in named:
            return _uncertain(f"COMPOSE_PROJECT_NAME in {env_file} refers to a variable")
        if named:  # an empty value counts as unset in 1.29 (``if project_name``)
            return _as_written(named, f"from COMPOSE_PROJECT_NAME in {env_file}")
        return _uncertain(f"COMPOSE_PROJECT_NAME is empty in {env_file}")
    if _TOP_LEVEL_NAME.search(compose_text):
        return _uncertain(f"{compose.file} has a top-level name:, which compose v2 uses and "
                          "1.29 does not")
    directory = project_directory(compose)
    name = normalize_name(posixpath.basename(directory))
    if not name or name[0] in "-_":
        return _uncertain(f"the directory {directory} gives no name that 1.29 and v2 agree on")
    return ProjectNaming(name, f"from the directory's name, {directory}")


def project_directory(compose: ComposeConfig) -> str:
    """``--project-directory`` (relative to the compose file's directory), else that directory."""
    given = _read_command(compose.command).project_directory
    return posixpath.normpath(posixpath.join(compose.directory, given or "."))

