"""Every `payfm ...` example in a command's --help parses: its command exists and its options and values are
ones that command takes (an option renamed or a choice dropped leaves no example behind that teaches it).

The examples are parsed, not run (running them is the docs audit's job): a file they name need not exist.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator

import click
import pytest

from payfm.cli.main import cli


def _commands(cmd: click.Command, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name, sub in sorted(cmd.commands.items()):
            yield from _commands(sub, (*path, name))


def examples(text: str) -> list[str]:
    """The lines of a help text that start with ``payfm ``, each with its continuation lines (``\\``)."""
    out: list[str] = []
    current: str | None = None
    for line in text.splitlines():
        s = line.strip()
        if current is None and not s.startswith("payfm "):
            continue
        part = s.removesuffix("\\").strip()
        current = part if current is None else f"{current} {part}"
        if not s.endswith("\\"):
            out.append(current.strip())
            current = None
    return out


def invocations(example: str) -> list[list[str]]:
    """The payfm invocations of an example line: its ``&&``-joined commands, each cut at a shell pipe,
    redirection or background ``&``, its comment left out."""
    lexer = shlex.shlex(example, posix=True, punctuation_chars=True)  # a quoted '>' is not a redirection
    lexer.whitespace_split = True
    words = list(lexer)
    out: list[list[str]] = []
    current: list[str] | None = None
    for w in words:
        if w in ("&&", ";", "||"):
            current = None
        elif w in ("|", "&", ">", ">>", "<", "(", ")"):
            current = []  # the rest of this command is the shell's
        elif current is None and w == "payfm":
            current = []
            out.append(current)
        elif current is not None and (not out or current is out[-1]):
            current.append(w)
    return out


def parse(args: list[str]) -> None:
    """Parse ``payfm ARGS`` down to its leaf command without running it; a click UsageError if it does not."""
    ctx = cli.make_context("payfm", list(args))
    cmd: click.Command = cli
    rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
    while isinstance(cmd, click.Group):
        if not rest:
            return  # a group's own help
        name, sub, rest = cmd.resolve_command(ctx, rest)
        assert sub is not None and name is not None
        ctx = sub.make_context(name, rest, parent=ctx)
        cmd = sub
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]


ALL = [
    (" ".join(path), ex)
    for path, cmd in _commands(cli, ("payfm",))
    for ex in examples(cmd.get_help(click.Context(cmd, info_name=" ".join(path))))
]


def test_the_help_texts_have_examples_to_check() -> None:
    assert len(ALL) >= 60
    assert examples("Examples:\n  payfm a --b \\\n    --c d   # e\n  text") == ["payfm a --b --c d   # e"]
    assert invocations("payfm a --x '> 5' && payfm b | head > f  # c") == [["a", "--x", "> 5"], ["b"]]


@pytest.mark.parametrize(("command", "example"), ALL, ids=[f"{c}: {e[:60]}" for c, e in ALL])
def test_a_help_example_parses(command: str, example: str) -> None:
    for args in invocations(example):
        try:
            parse(args)
        except click.exceptions.Exit:
            pass  # --help, --version
        except click.BadParameter as e:
            if "does not exist" not in e.format_message():  # a file the example names, not made here
                raise AssertionError(f"{command} --help: {example!r}: {e.format_message()}") from None
        except click.UsageError as e:
            raise AssertionError(f"{command} --help: {example!r}: {e.format_message()}") from None
