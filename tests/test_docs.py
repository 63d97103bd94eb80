"""The docs describe what exists: every schema field is documented with its own words, every command named."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click

from payfm.cli.main import cli
from payfm.events.schema import SCHEMAS

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_every_event_field_is_documented_with_its_schema_text() -> None:
    text = (DOCS / "events.md").read_text()
    for table, schema in SCHEMAS.items():
        section = text.split(f"### `{table}`", 1)
        assert len(section) == 2, f"docs/events.md has no section for table '{table}'"
        body = section[1].split("### ", 1)[0]
        for field in schema:
            doc = field.metadata[b"doc"].decode()
            rows = [line for line in body.splitlines() if line.startswith(f"| `{field.name}` |")]
            assert len(rows) == 1, f"'{table}.{field.name}' is not documented exactly once"
            cells = [c.strip() for c in rows[0].strip("|").split("|")]
            assert cells[2] == ("yes" if not field.nullable else "no"), f"'{table}.{field.name}' required"
            assert cells[-1] == doc, f"the doc of '{table}.{field.name}' differs from the schema"


def _command_paths(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            if command.invoke_without_command:  # `payfm serve` runs by itself too
                yield (*path, name)
            yield from _command_paths(command, (*path, name))
        else:
            yield (*path, name)


def _span_commands(span: str) -> tuple[set[tuple[str, ...]], tuple[str, ...] | None]:
    """The command paths one code span `payfm ...` names (`rules check\\|show`: two), and the group it names
    with `...` (every command below it), if any."""
    words: list[str] = []
    for word in span.split():
        if word == "...":
            return set(), tuple(words)
        if not re.fullmatch(r"[a-z][a-z-]*(\\\|[a-z][a-z-]*)*", word):
            break  # an option, an argument, a placeholder: the command ends before it
        if "\\|" in word:
            return {(*words, alternative) for alternative in word.split("\\|")}, None
        words.append(word)
    return ({tuple(words)} if words else set()), None


def _documented_commands(text: str) -> tuple[set[tuple[str, ...]], set[tuple[str, ...]]]:
    """The command paths a text names in code spans, and the groups it names with `...`."""
    named: set[tuple[str, ...]] = set()
    groups: set[tuple[str, ...]] = set()
    for span in re.findall(r"`payfm ([^`]+)`", text):
        paths, group = _span_commands(span)
        named |= paths
        if group is not None:
            groups.add(group)
    return named, groups


def test_the_readme_command_table_names_every_command() -> None:
    readme = (DOCS.parent / "README.md").read_text()
    table = readme.split("## What is there now", 1)[1].split("\n\n", 2)[1]
    named, groups = _documented_commands(table)
    missing = [
        "payfm " + " ".join(path)
        for path in _command_paths(cli)
        if path not in named and not any(path[: len(g)] == g for g in groups)
    ]
    assert missing == [], f"README's command table does not name: {missing}"


def test_the_readme_puts_the_workspace_option_before_the_command() -> None:
    readme = (DOCS.parent / "README.md").read_text()
    assert "`payfm -w DIR summary`, not `payfm summary -w DIR`" in readme
