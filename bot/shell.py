"""Building the shell commands rollbot sends: every value validated, then quoted."""

from __future__ import annotations

import re
import shlex

from bot.errors import InvalidInput

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")


def quote(value: str) -> str:
    """Quote one argument for a POSIX shell."""
    return shlex.quote(value)


def join(*args: str) -> str:
    """Join already-validated arguments into one command line, each quoted."""
    return " ".join(shlex.quote(a) for a in args)


def with_prefix(prefix: str, *args: str) -> str:
    """A command from the runbook (trusted, kept as written) followed by quoted arguments."""
    return " ".join([prefix, *(shlex.quote(a) for a in args)])


def sql_identifier(name: str, *, what: str) -> str:
    """Validate a database or table name; returned double-quoted for SQL."""
    if _IDENTIFIER.fullmatch(name) is None:
        raise InvalidInput(
            f"{what} '{name[:64]}' is not a plain SQL name (letters, digits and _ only)."
        )
    return f'"{name}"'


def file_name(name: str, *, what: str) -> str:
    """Validate a bare file name (no directory part, no leading dash or dot)."""
    if _FILE_NAME.fullmatch(name) is None or ".." in name:
        raise InvalidInput(
            f"{what} '{name[:80]}' is not a plain file name "
            "(letters, digits, '.', '_' and '-', no directories)."
        )
    return name


def check_runbook_command(text: str) -> str:
    """A command prefix from the runbook must be one line that a shell can parse."""
    if not text.strip() or any(c in text for c in "\n\r\0"):
        raise ValueError("must be a single non-empty command line")
    shlex.split(text)  # raises ValueError on unbalanced quotes
    return text


# Unquoted, each of these makes a runbook prefix more than one simple command, or moves its
# standard input or output away from the pipe rollbot builds around it.
_CONTROL = {";": "`;`", "&": "`&`", "|": "`|`", "<": "a redirection (`<`)",
            ">": "a redirection (`>`)", "(": "a subshell `( )`", ")": "a subshell `( )`",
            "`": "a command substitution", "$(": "a command substitution `$( )`",
            "#": "a comment `#` (it would swallow the arguments rollbot adds)"}
_PAIRS = {"&&": "`&&`", "||": "`||`", "<<": "a redirection (`<<`)", ">>": "a redirection (`>>`)"}


def shell_control(text: str) -> list[str]:
    """The shell control syntax in ``text`` outside quotes, in the order it appears."""
    found: list[str] = []
    quote = ""
    word_start = True
    i = 0
    while i < len(text):
        c, pair = text[i], text[i:i + 2]
        step = 1
        if quote == "'":
            quote = "" if c == "'" else quote
        elif c == "\\":
            step = 2  # an escaped character is literal
        elif quote == '"':
            if c == '"':
                quote = ""
            elif c == "`" or pair == "$(":  # still expanded inside double quotes
                found.append(_CONTROL[c if c == "`" else pair])
        elif c in "'\"":
            quote = c
        elif pair in _PAIRS:
            found.append(_PAIRS[pair])
            step = 2
        elif pair == "$(":
            found.append(_CONTROL[pair])
            step = 2
        elif c in _CONTROL and (c != "#" or word_start):
            found.append(_CONTROL[c])
        elif c in "\n\r":
            found.append("a line break")
        word_start = c in " \t"
        i += step
    return list(dict.fromkeys(found))


_PIPES = {
    "psql": "the restore runs `gunzip < BACKUP | {cmd} …`, so psql must read that pipe",
    "pg_dump": "the safety backup runs `{cmd} … | gzip`, so gzip must read pg_dump's output",
}


_CONTAINER_EXEC = {("docker", "exec"), ("docker", "container", "exec"), ("podman", "exec"),
                   ("podman", "container", "exec")}
_EXEC_VALUE_OPTIONS = {"-e", "--env", "--env-file", "-u", "--user", "-w", "--workdir",
                       "--detach-keys"}
_WRAPPERS = {"env", "sudo", "exec", "command"}


def container_exec_tty(text: str) -> bool:
    """Whether ``text`` runs a tool through ``docker exec`` (or podman's) with a TTY (``-t``)."""
    words = shlex.split(text)
    while words and (words[0] in _WRAPPERS or ("=" in words[0] and words[0][0] != "-")):
        words = words[1:]  # `env PGPASSWORD=… docker exec …`
    head = next((n for n in (2, 3) if tuple(words[:n]) in _CONTAINER_EXEC), 0)
    if not head:
        return False
    rest, i = words[head:], 0
    while i < len(rest) and rest[i].startswith("-") and rest[i] != "--":
        name, _, value = rest[i].partition("=")
        if name == "--tty":
            return value in ("", "true", "1")
        if name.startswith("--"):
            i += 2 if name in _EXEC_VALUE_OPTIONS and not value else 1
            continue
        for j, flag in enumerate(name[1:]):
            if flag == "t":
                return True
            if flag not in "id":  # -e/-u/-w take a value: the rest of the word, or the next
                i += 1 if j == len(name) - 2 else 0
                break
        i += 1
    return False


def check_piped_command(text: str, *, tool: str) -> str:
    """A psql or pg_dump prefix must be one simple command: rollbot pipes into it or out of it.

    In ``cd /x && psql`` the restore's pipe would feed ``cd``, and in ``a; psql`` it would feed
    ``a``; a redirection or a comment would move the pipe or swallow rollbot's arguments.
    """
    check_runbook_command(text)
    found = shell_control(text)
    if shlex.split(text)[0] == "!":
        found.append("`!` (it inverts the exit status)")
    if found:
        why = _PIPES[tool].format(cmd=" ".join(text.split()[:3]))
        raise ValueError(
            f"must be one simple command ({why}), but it contains {', '.join(found)}. Put the "
            f"extra steps in a wrapper script on the host that ends with `exec {tool} \"$@\"` "
            f"and name the script here, or run {tool} in the database container with "
            f"`docker exec -i CONTAINER {tool} -U USER`")
    if container_exec_tty(text):
        # A TTY turns each "\n" into "\r\n": a safety dump taken through it still gunzips and
        # ends with pg_dump's closing line, but its data rows are altered.
        raise ValueError(
            f"must not run {tool} in the container with a TTY (-t / --tty): rollbot pipes "
            "into psql and out of pg_dump, and a TTY rewrites every line ending as \\r\\n "
            "(a safety dump would be altered without any error) or, with -i, is refused by "
            "Docker (\"the input device is not a TTY\"). Use `docker exec -i CONTAINER "
            f"{tool} -U USER` (-i only)")
    return text


def check_psql_prefix(text: str) -> str:
    return check_piped_command(text, tool="psql")


def check_pg_dump_prefix(text: str) -> str:
    return check_piped_command(text, tool="pg_dump")
