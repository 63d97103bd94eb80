"""`payfm lists`: the typed value lists rules read (`:email_domain: in @trusted_domains`).

Thin: parse options, call payfm.rules.lists, render with rich.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from payfm.cli.render import console, err_console, plural
from payfm.events.text import escaped
from payfm.events.workspace import Workspace
from payfm.rules import ast, rulesets
from payfm.rules import lists as lists_lib
from payfm.rules.catalog import CHARGE_STRING_FIELDS, LIST_TYPES, UNREAD_LIST_TYPES
from payfm.rules.grammar import parse_rules
from payfm.rules.limits import RuleError

SHOWN_VALUES = 200  # `lists show` without --limit: a 20,000-value list is not 20,000 lines


def _warn(message: str) -> None:
    err_console.print(f"warning: {message}", markup=False, highlight=False, soft_wrap=True)


def _values(values: tuple[str, ...], path: str | None) -> tuple[list[str], list[str]]:
    """VALUES given on the command line, then those of ``--file`` (one per line; blank lines, lines starting
    with # and a # after a space skipped: ``5.6.7.8  # tor exit``; ``-`` reads standard input); and where
    each one came from ("value 2 of the command line", "line 7 of 'bad.txt'"), for an error to name."""
    out = list(values)
    where = [f"value {i} of the command line" for i in range(1, len(out) + 1)]
    if path is not None:
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as e:
            shown = "standard input" if path == "-" else f"'{escaped(path)}'"
            raise RuleError(f"--file: expected a readable UTF-8 text file; {shown} gave: {e}") from None
        shown = "standard input" if path == "-" else f"'{escaped(path)}'"
        # Lines end at \n (\r\n too): splitlines() also split at U+2028, \x1c... which a value read from the
        # command line is refused for holding; here they are in the value, and refused with it.
        for n, line in enumerate(text.removesuffix("\n").split("\n"), start=1):
            line = line.removesuffix("\r")
            value = re.split(r"\s#", line, maxsplit=1)[0].strip()
            if value and not value.startswith("#"):
                out.append(value)
                where.append(f"line {n} of {shown}")
    if not out and path is not None:
        raise RuleError(
            f"--file: expected one value per line; {shown} holds none (only blank lines and # comments)."
        )
    if not out:
        raise click.UsageError("Give VALUES, or --file with one value per line.")
    return out, where


_FILE = click.option(
    "--file",
    "path",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Also read values from this file, one per line (# comments and blank lines skipped; - for stdin).",
)

_NOTE = click.option(
    "--note", default="", help="Why (kept on the change's entries of the audit trail: `payfm lists audit`)."
)


@click.group()
def lists() -> None:
    """Typed value lists for rules (`:email_domain: in @trusted_domains`), with an audit trail.

    \b
    Examples:
      payfm lists create blocked_ips --type ip_address
      payfm lists add blocked_ips 203.0.113.7 198.51.100.23
      payfm lists add blocked_ips --file ips.txt
      payfm lists list
    """


@lists.command(name="list")
@click.pass_context
def list_lists(ctx: click.Context) -> None:
    """Every list: its type, size, who made it, and whether the active ruleset reads it."""
    ws = Workspace.open(ctx.obj["workspace"])
    active = rulesets.active(ws)
    read: set[str] = set()
    if active is not None:
        read = set().union(*(ast.lists(r.condition) for r in parse_rules(active.text, saved=True)))
    found = lists_lib.all_lists(ws)
    if not found:
        console.print("No lists yet: payfm lists create NAME --type TYPE.", markup=False, highlight=False)
        return
    table = Table("name", "type", "values", "created", "by", "read by the active ruleset")
    for v in found:
        used = f"yes (v{active.version})" if active is not None and v.name in read else "no"
        table.add_row(
            Text(escaped(v.name)), v.type, f"{v.size:,}", v.created[:19], Text(escaped(v.author)), used
        )
    console.print(table)


@lists.command()
@click.argument("name")
@click.option("--type", "list_type", required=True, type=click.Choice(LIST_TYPES), help="Value type.")
@click.pass_context
@_NOTE
def create(ctx: click.Context, name: str, list_type: str, note: str) -> None:
    """Create an empty list NAME of a type."""
    ws = Workspace.open(ctx.obj["workspace"])
    lists_lib.create_list(ws, name, list_type, note=note)
    console.print(f"Created list '{name}' of type {list_type}.", markup=False, highlight=False)
    if list_type in UNREAD_LIST_TYPES:
        _warn(UNREAD_LIST_TYPES[list_type])


@lists.command()
@click.argument("name")
@click.argument("values", nargs=-1)
@_FILE
@click.pass_context
@_NOTE
def add(ctx: click.Context, name: str, values: tuple[str, ...], path: str | None, note: str) -> None:
    """Add VALUES (and those of --file) to list NAME, all or none.

    \b
    Example:
      payfm lists add blocked_ips 203.0.113.7 --note "card testing from this IP, ticket FR-1234"
    """
    ws = Workspace.open(ctx.obj["workspace"])
    given, places = _values(values, path)
    n, already = lists_lib.add_values_reporting(ws, name, given, note=note, places=places)
    console.print(f"Added {plural(n, 'new value')} to '{name}'.", markup=False, highlight=False)
    if (twice := len(given) - n - len(already)) > 0:  # given twice once normalized: 'Mailinator.com'
        _warn(
            f"{twice} of the {len(given)} values given repeat another of them once normalized (case, IP and "
            "domain forms): each is on the list once."
        )
    if already:
        shown = ", ".join(repr(escaped(v)) for v in already[:10])
        more = f" and {len(already) - 10} more" if len(already) > 10 else ""
        _warn(f"on '{name}' already, so not added again: {shown}{more}.")
    _warn_unseen(ws, name, given)


# The charge field holding each list type's values, from the rules' catalog (country: several fields, and
# every code is valid anyway; email: no field holds an address).
_SEEN_IN = {
    kind: name for name, kind in CHARGE_STRING_FIELDS.items() if kind is not None and kind != "country"
}
_UNSEEN_SHOWN = 5


def _warn_unseen(ws: Workspace, name: str, given: list[str]) -> None:
    """Warn of added values no charge of the event log holds: a list may name values ahead of them (an IP
    of a threat feed), but an id copied cut short ('fp_e46ff8…') or mistyped would never match, silently."""
    import pyarrow as pa

    list_type = lists_lib.get_list(ws, name).type
    column = _SEEN_IN.get(list_type)
    if column is None or not given or not ws.count("charges"):
        return
    wanted = list(dict.fromkeys(lists_lib.normalize(list_type, v) for v in given))
    con = ws.connect()
    try:
        con.register("__payfm_added", pa.table({"i": range(len(wanted)), "v": pa.array(wanted, pa.string())}))
        # (a BIN entry matches the charges whose BIN starts with it, as rules test it)
        held = (  # (the BINs' 6, 7 and 8-digit prefixes as a set: one hash join, not a test per pair)
            f"a.v IN (SELECT DISTINCT left({column}, n) FROM charges, (VALUES (6), (7), (8)) p(n) "
            f"WHERE {column} IS NOT NULL)"
            if list_type == "bin"
            else f"a.v IN (SELECT {column} FROM charges WHERE {column} IS NOT NULL)"
        )
        unseen = [
            r[0] for r in con.execute(f"SELECT v FROM __payfm_added a WHERE NOT {held} ORDER BY i").fetchall()
        ]
    finally:
        con.close()
    if unseen:
        shown = ", ".join(escaped(v) for v in unseen[:_UNSEEN_SHOWN])
        more = f" and {len(unseen) - _UNSEEN_SHOWN:,} more" if len(unseen) > _UNSEEN_SHOWN else ""
        _warn(
            f"{plural(len(unseen), 'value')} of '{name}' no charge of the event log holds as {column}: "
            f"{shown}{more}. Right for a value seen elsewhere first; check one copied from a screen or typed "
            f"(a value cut short never matches)."
        )


@lists.command()
@click.argument("name")
@click.argument("values", nargs=-1)
@_FILE
@click.pass_context
@_NOTE
def remove(ctx: click.Context, name: str, values: tuple[str, ...], path: str | None, note: str) -> None:
    """Remove VALUES (and those of --file) from list NAME; names the values it does not hold."""
    ws = Workspace.open(ctx.obj["workspace"])
    given, places = _values(values, path)
    n, absent = lists_lib.remove_values_reporting(ws, name, given, note=note, places=places)
    console.print(f"Removed {plural(n, 'value')} from '{name}'.", markup=False, highlight=False)
    if absent:
        shown = ", ".join(repr(escaped(v)) for v in absent[:10])
        more = f" and {len(absent) - 10} more" if len(absent) > 10 else ""
        _warn(f"not on '{name}', so not removed: {shown}{more}.")


@lists.command(name="delete")
@click.argument("name")
@_NOTE
@click.pass_context
def delete_list(ctx: click.Context, name: str, note: str) -> None:
    """Delete list NAME and its values (its audit trail stays). Refused while the active ruleset reads it.

    \b
    Example:
      payfm lists delete old_bad_domains
    """
    ws = Workspace.open(ctx.obj["workspace"])
    n = lists_lib.delete_list(ws, name, note=note)
    console.print(f"Deleted list '{name}' ({plural(n, 'value')}).", markup=False, highlight=False)


@lists.command(name="show")
@click.argument("name")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=SHOWN_VALUES,
    show_default=True,
    help="Show at most this many values (0: all).",
)
@click.pass_context
def show_list(ctx: click.Context, name: str, limit: int) -> None:
    """Show list NAME: its type and values (sorted)."""
    ws = Workspace.open(ctx.obj["workspace"])
    info = lists_lib.get_list(ws, name)
    # A line of its own, not the table's title: a title wraps within the table, one narrow column of values.
    title = f"List '{info.name}' ({info.type}, {plural(info.size, 'value')})"
    console.print(title, markup=False, highlight=False, soft_wrap=True)
    values = lists_lib.list_values(ws, name)
    table = Table("value")
    for v in values[: limit or None]:
        table.add_row(Text(escaped(v)))  # text, never markup: '[red]cus_1' stays '[red]cus_1'
    console.print(table)
    if limit and len(values) > limit:
        console.print(
            f"... and {len(values) - limit:,} more (--limit 0 shows all).", markup=False, highlight=False
        )


@lists.command(name="audit")
@click.argument("name")
@click.pass_context
def audit_list(ctx: click.Context, name: str) -> None:
    """Show who changed list NAME, when, and how."""
    ws = Workspace.open(ctx.obj["workspace"])
    table = Table(title=Text(f"Audit trail of '{name}'"))
    entries = lists_lib.audit(ws, name)
    noted = any(e.note for e in entries)
    for col in ("at", "author", "action", "value", *(("note",) if noted else ())):
        table.add_column(col)
    for e in entries:
        note = (Text(escaped(e.note)),) if noted else ()  # (checked when written: no control characters)
        table.add_row(e.at[:26], Text(escaped(e.author)), e.action, Text(escaped(e.value or "")), *note)
    console.print(table)
