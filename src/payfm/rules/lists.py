"""Typed value lists (``@blocked_cards``, ``@trusted_domains``) with an audit trail, in ``rules.db``.

Types: card_fingerprint, email, email_domain, ip_address, bin, country, customer_id. Values are
validated and normalized per type (countries upper case, e-mails and domains lower case, IPs canonical); a
full card number is rejected and never echoed, and so are control characters (an escape sequence printed by
``lists show`` would take over the reader's terminal) and invisible formatting characters (a bidi override
reorders what is printed); list names are refused for the same reasons. Every
create / add / remove records who, when, what and the value. Domains and IPs are canonicalized by the event
schema's own functions (:func:`payfm.events.schema.canonical_domain`,
:func:`~payfm.events.schema.canonical_ip`), which charges pass through too, so a list entry and a charge's
value spelled differently (``EVIL.COM``, fullwidth ``ｅｖｉｌ.com``, ``xn--bcher-kva.de`` for ``bücher.de``)
still match.

Example:
    >>> import tempfile
    >>> from payfm.events.workspace import Workspace
    >>> ws = Workspace.open(tempfile.mkdtemp(), create=True)
    >>> _ = create_list(ws, "risky_countries", "country", author="ana")
    >>> add_values(ws, "risky_countries", ["ng", "RU"], author="ana")
    2
    >>> sorted(list_values(ws, "risky_countries"))
    ['NG', 'RU']
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from payfm.errors import ConfigError
from payfm.events.cards import contains_card_number, mask_long_numbers, shown_text
from payfm.events.countries import DESCRIBED, country_hint, is_country
from payfm.events.schema import DomainError, canonical_domain, canonical_ip
from payfm.events.workspace import Workspace, opened
from payfm.inputs import kind
from payfm.rules.catalog import LIST_TYPES, similar_name
from payfm.rules.db import connect, default_author, now_iso
from payfm.rules.limits import (
    INVISIBLE,
    RuleError,
    check_note,
    control_character,
    format_character,
    line_breaks,
)

MAX_LIST_VALUES = 1_000_000
MAX_VALUE_CHARS = 256
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


@dataclass(frozen=True)
class ValueList:
    name: str
    type: str
    created: str
    author: str
    size: int


@dataclass(frozen=True)
class AuditEntry:
    at: str
    author: str
    action: str  # create, add, remove, delete
    value: str | None
    note: str = ""  # why (``--note``): the same on every entry of one change


# What a value of each list type looks like, for the error that refuses one.
_EXPECTED = {
    "bin": "6 to 8 digits (the first digits of a card number, e.g. 411111 or 41111122)",
    "email_domain": "a domain name (example.com)",
    "email": "an e-mail address (name@example.com)",
    "ip_address": "a single IPv4 or IPv6 address (203.0.113.7, 2001:db8::1)",
}


def _refused(list_type: str, shown: str, why: str = "") -> RuleError:
    expected = _EXPECTED.get(list_type, f"a valid {list_type}")
    article = "an" if list_type[0] in "aeiou" else "a"
    return RuleError(f"A value of {article} {list_type} list must be {expected}{why}. Got {shown}.")


def _quoted(v: str) -> str:
    return repr(v if len(v) <= 40 else v[:40] + "...")


def _shown_name(name: str) -> str:
    """A list name as a message quotes it: quoted, escaped (no control character reaches a terminal), cut,
    without a long digit run (a card number)."""
    return mask_long_numbers(repr(name if len(name) <= 70 else name[:70] + "..."))


def check_name(name: str) -> None:
    """Raise a RuleError if ``name`` is not a valid list name: a word of letters, digits and _ (at most 64),
    holding no card number (a name is printed by every command and stored in every rule that reads it)."""
    if contains_card_number(name):
        raise RuleError(
            "A list name must not contain a card number (PAN): it is printed and stored with every rule that "
            "reads the list. Got a name holding one (not shown)."
        )
    if (control := control_character(name)) is not None:
        raise RuleError(f"A list name must not contain control characters. {control}")
    if not _NAME.fullmatch(name):
        raise RuleError(
            f"A list name is a word of letters, digits and _ (at most 64). Got {_shown_name(name)}."
        )


def normalize(list_type: str, value: str) -> str:
    """``value`` validated and normalized for a list of ``list_type``; a RuleError says why not.

    >>> normalize("ip_address", "2001:0DB8::0001"), normalize("bin", "41111122")
    ('2001:db8::1', '41111122')
    """
    v = value.strip()
    if not v or len(v) > MAX_VALUE_CHARS:
        raise RuleError(f"A {list_type} list value has 1 to {MAX_VALUE_CHARS} characters. Got {len(v)}.")
    if contains_card_number(v):
        raise RuleError("List values must not contain a card number (PAN); use the card fingerprint.")
    if (control := control_character(v)) is not None:
        raise RuleError(f"A list value must not contain control characters. {control}")
    if (invisible := format_character(v)) is not None:
        raise RuleError(
            f"A list value must not contain {INVISIBLE}: printed, they hide or reorder what the value shows. "
            f"{invisible}"
        )
    if list_type == "country":
        if not is_country(v.upper()):
            hint = country_hint(v)
            raise RuleError(f"A value of a country list must be {DESCRIBED}. Got {v[:40]!r}.{hint}")
        return v.upper()
    if list_type == "bin":
        if re.fullmatch(r"[0-9]{6,8}", v) is None:
            raise _refused(list_type, _quoted(v))
        return v
    if list_type == "email_domain":
        try:
            v = canonical_domain(v)
        except DomainError as e:  # an e-mail address is personal data: never quoted
            raise _refused(list_type, e.hidden or _quoted(v)) from None
        return v  # every domain a charge can hold (canonical_domain's rule), so every one can be listed
    if list_type == "email":
        local, _, domain = v.lower().partition("@")
        try:
            domain = canonical_domain(domain)
        except DomainError:
            domain = ""
        if not local or not domain:
            raise _refused(list_type, "a value that is not one (not shown)")
        return f"{local}@{domain}"
    if list_type == "ip_address":
        if "/" in v:
            raise _refused(
                list_type,
                _quoted(v),
                ": CIDR ranges are not supported, list each address (or use :ip_country:)",
            )
        try:
            return canonical_ip(v)
        except ValueError:
            raise _refused(list_type, _quoted(v)) from None
    return v


def _check_type(list_type: str) -> None:
    if list_type not in LIST_TYPES:
        raise RuleError(f"A list's type must be one of {', '.join(LIST_TYPES)}. Got {list_type!r}.")


def create_list(
    ws: Workspace,
    name: str,
    list_type: str,
    *,
    author: str | None = None,
    at: datetime | None = None,
    note: str = "",
) -> ValueList:
    """Create an empty list ``name`` of ``list_type`` (a name :func:`check_name` accepts)."""
    ws = opened(ws, "lists.create_list")
    check_name(name)
    _check_type(list_type)
    who, when, note = _who_when(author, at, note)
    with connect(ws, immediate=True) as con:  # (the case check and the insert: one write transaction)
        if con.execute("SELECT 1 FROM lists WHERE name = ?", (name,)).fetchone():
            raise RuleError(f"List '{name}' already exists.")
        other = con.execute("SELECT name FROM lists WHERE lower(name) = lower(?)", (name,)).fetchone()
        if other:  # two names a reader cannot tell apart in a rule: `@Bad_Bins` beside `@bad_bins`
            raise RuleError(
                f"A list name must differ from the others by more than case. Got '{name}'; list "
                f"'{other[0]}' exists."
            )
        con.execute("INSERT INTO lists VALUES (?, ?, ?, ?)", (name, list_type, when, who))
        con.execute(
            "INSERT INTO list_audit (list, at, author, action, value, note) VALUES (?, ?, ?, 'create', ?, ?)",
            (name, when, who, list_type, note),
        )
    return ValueList(name, list_type, when, who, 0)


def _require(con: sqlite3.Connection, name: str) -> str:
    row = con.execute("SELECT type FROM lists WHERE name = ?", (name,)).fetchone()
    if row is None:
        names = [r[0] for r in con.execute("SELECT name FROM lists ORDER BY name")]
        close = similar_name(name, names)
        if close:
            hint = f" Did you mean {_shown_name(close)}?"
        elif names:
            shown = ", ".join(_shown_name(n) for n in names[:10]) + (", ..." if len(names) > 10 else "")
            hint = f" The workspace's lists: {shown} (payfm lists list)."
        else:
            hint = " The workspace has no list yet (payfm lists create NAME --type TYPE)."
        raise RuleError(f"Unknown list {_shown_name(name)}.{hint}")
    return str(row[0])


def _who_when(author: str | None, at: datetime | None, note: str) -> tuple[str, str, str]:
    """The author, time and note of a change, the note checked as a ruleset's (printed by `lists audit`)."""
    note = line_breaks(note or "")  # (None: no note)
    check_note(note, author, whose="A list change's")
    return author or default_author(), now_iso(at), note


def _change(
    ws: Workspace,
    name: str,
    values: Iterable[str],
    action: str,
    author: str | None,
    at: datetime | None,
    note: str = "",
    places: Sequence[str] | None = None,
    *,
    who: str,
) -> tuple[int, list[str]]:
    """How many of ``values`` changed the list, and those that did not (in their stored form), in one
    transaction. ``places`` names where each value came from, for a refusal (default ``value 3 of 5``);
    ``who``: the public function called (``add_values``), for a refusal of the arguments."""
    ws = opened(ws, f"lists.{who}")
    if isinstance(values, str):  # (a text is an iterable of its characters: one entry each)
        raise RuleError(
            f"The values for list {_shown_name(name)} must be a list of values. Got a single text; "
            f"for one value, pass [{shown_text(values)!r}]."
        )
    values = _texts(values, name, who)
    who, when, note = _who_when(author, at, note)
    changed, untouched = 0, []
    with connect(ws, immediate=True) as con:
        list_type = _require(con, name)
        stored = None
        if (
            action == "remove"
        ):  # a value stored before a check refused its kind can still be removed as stored
            stored = {r[0] for r in con.execute("SELECT value FROM list_values WHERE list = ?", (name,))}
        normalized = _normalized(name, list_type, list(values), stored, places)
        for v in dict.fromkeys(normalized):
            if action == "add":
                cur = con.execute("INSERT OR IGNORE INTO list_values VALUES (?, ?)", (name, v))
            else:
                cur = con.execute("DELETE FROM list_values WHERE list = ? AND value = ?", (name, v))
            if not cur.rowcount:
                untouched.append(v)
                continue
            changed += 1
            con.execute(
                "INSERT INTO list_audit (list, at, author, action, value, note) VALUES (?, ?, ?, ?, ?, ?)",
                (name, when, who, action, v, note),
            )
        size = con.execute("SELECT count(*) FROM list_values WHERE list = ?", (name,)).fetchone()[0]
        if size > MAX_LIST_VALUES:
            raise RuleError(f"A list holds at most {MAX_LIST_VALUES:,} values. '{name}' would hold {size:,}.")
    return changed, untouched


def _texts(values: object, name: str, who: str) -> list[str]:
    """``values`` as a list of texts, else a ConfigError naming ``who``'s 'values' and the first that is not
    one: a BIN or an id read as a number (``[411112]``) is written as text, ``"411112"`` (a number loses a
    leading zero). A number is quoted without a card number (:func:`mask_long_numbers`)."""
    if not isinstance(values, Iterable):
        raise ConfigError(f"The 'values' of lists.{who} must be a list of texts. Got {kind(values)}.")
    out = list(values)
    for i, v in enumerate(out, start=1):
        if isinstance(v, str):
            continue
        where = f" (value {i} of {len(out)})" if len(out) > 1 else ""
        number = isinstance(v, int | float) and not isinstance(v, bool)
        got = f"the {type(v).__name__} {mask_long_numbers(str(v))}" if number else kind(v)
        raise ConfigError(
            f"The 'values' of lists.{who} (list {_shown_name(name)}) must be texts, e.g. \"411112\" for a "
            f"BIN. Got {got}{where}"
            + (f': write it as text, "{mask_long_numbers(str(v))}".' if number else ".")
        )
    return out


def _normalized(
    name: str,
    list_type: str,
    values: list[str],
    stored: set[str] | None = None,
    places: Sequence[str] | None = None,
) -> list[str]:
    """``values`` normalized for list ``name``; the refusal of one names the list and the value's position
    (``value 3 of 5``), to find a value the refusal does not quote (a card number, a hidden character). A
    value refused that is one of ``stored`` (the list's values, when removing) is taken as it is."""
    out = []
    for i, v in enumerate(values, start=1):
        try:
            out.append(normalize(list_type, v))
        except RuleError as e:
            if stored is not None and v.strip() in stored:
                out.append(v.strip())
                continue
            where = (
                places[i - 1]
                if places is not None and len(places) == len(values)
                else f"value {i} of {len(values)}"
                if len(values) > 1
                else "the value"
            )
            raise RuleError(f"List {_shown_name(name)}, {where}: {e.detail}") from None
    return out


def add_values(
    ws: Workspace,
    name: str,
    values: Iterable[str],
    *,
    author: str | None = None,
    at: datetime | None = None,
    note: str = "",
) -> int:
    """Add ``values`` to list ``name`` in one transaction; returns how many were new."""
    return _change(ws, name, values, "add", author, at, note, who="add_values")[0]


def add_values_reporting(
    ws: Workspace,
    name: str,
    values: Iterable[str],
    *,
    author: str | None = None,
    at: datetime | None = None,
    note: str = "",
    places: Sequence[str] | None = None,
) -> tuple[int, list[str]]:
    """:func:`add_values`, with the values (in their stored form) the list held already, read in the same
    transaction (what ``payfm lists add`` names); ``places``: where each value came from, for a refusal."""
    return _change(ws, name, values, "add", author, at, note, places, who="add_values_reporting")


def remove_values(
    ws: Workspace,
    name: str,
    values: Iterable[str],
    *,
    author: str | None = None,
    at: datetime | None = None,
    note: str = "",
) -> int:
    """Remove ``values`` from list ``name`` in one transaction; returns how many were there."""
    return _change(ws, name, values, "remove", author, at, note, who="remove_values")[0]


def remove_values_reporting(
    ws: Workspace,
    name: str,
    values: Iterable[str],
    *,
    author: str | None = None,
    at: datetime | None = None,
    note: str = "",
    places: Sequence[str] | None = None,
) -> tuple[int, list[str]]:
    """:func:`remove_values`, with the values (in their stored form) the list did not hold, read in the same
    transaction (what ``payfm lists remove`` names); ``places``: where each value came from, for a refusal."""
    return _change(ws, name, values, "remove", author, at, note, places, who="remove_values_reporting")


def delete_list(
    ws: Workspace, name: str, *, author: str | None = None, at: datetime | None = None, note: str = ""
) -> int:
    """Delete list ``name`` and its values; returns how many values it held. Its audit trail stays, ending
    with a ``delete`` entry (a list made again under the name continues it).

    Refused while the active ruleset reads the list (a decision service could no longer load it); a stored
    version that reads it no longer compiles, and ``rules activate`` says so, naming the list.

        >>> import tempfile
        >>> ws = Workspace.open(tempfile.mkdtemp(), create=True)
        >>> _ = create_list(ws, "bad_domains", "email_domain", author="ana")
        >>> add_values(ws, "bad_domains", ["spam.example"], author="ana")
        1
        >>> delete_list(ws, "bad_domains", author="ana")
        1
        >>> [e.action for e in audit(ws, "bad_domains")]
        ['create', 'add', 'delete']
    """
    ws = opened(ws, "lists.delete_list")
    from payfm.rules import ast
    from payfm.rules.grammar import parse_rules

    who, when, note = _who_when(author, at, note)
    with connect(ws, immediate=True) as con:
        _require(con, name)
        active = con.execute(
            "SELECT r.version, r.text FROM active_ruleset a JOIN rulesets r USING (version) WHERE a.id = 1"
        ).fetchone()
        if active is not None:
            reads = set().union(*(ast.lists(r.condition) for r in parse_rules(active[1], saved=True)))
            if name in reads:
                raise RuleError(
                    f"List {_shown_name(name)} is read by the active ruleset v{active[0]}: a decision "
                    "service could no longer load it. Activate a version that does not read it first "
                    "(payfm rules activate VERSION)."
                )
        size = int(con.execute("SELECT count(*) FROM list_values WHERE list = ?", (name,)).fetchone()[0])
        con.execute("DELETE FROM list_values WHERE list = ?", (name,))
        con.execute("DELETE FROM lists WHERE name = ?", (name,))
        con.execute(
            "INSERT INTO list_audit (list, at, author, action, value, note) VALUES (?, ?, ?, 'delete', ?, ?)",
            (name, when, who, f"{size} value{'' if size == 1 else 's'}", note),
        )
    return size


def all_lists(ws: Workspace) -> list[ValueList]:
    """Every list, by name, with its size."""
    ws = opened(ws, "lists.all_lists")
    with connect(ws) as con:
        rows = con.execute(
            "SELECT l.name, l.type, l.created, l.author, count(v.value) FROM lists l "
            "LEFT JOIN list_values v ON v.list = l.name GROUP BY l.name, l.type, l.created, l.author "
            "ORDER BY l.name"
        ).fetchall()
    return [ValueList(str(n), str(t), str(c), str(a), int(k)) for n, t, c, a, k in rows]


def list_values(ws: Workspace, name: str) -> list[str]:
    """The values of list ``name``, sorted (a RuleError names the nearest list for an unknown name)."""
    ws = opened(ws, "lists.list_values")
    with connect(ws) as con:
        _require(con, name)
        return [
            r[0] for r in con.execute("SELECT value FROM list_values WHERE list = ? ORDER BY value", (name,))
        ]


def get_list(ws: Workspace, name: str) -> ValueList:
    """List ``name``: its type, when and by whom it was made, and its size."""
    ws = opened(ws, "lists.get_list")
    with connect(ws) as con:
        list_type = _require(con, name)
        created, author = con.execute("SELECT created, author FROM lists WHERE name = ?", (name,)).fetchone()
        size = con.execute("SELECT count(*) FROM list_values WHERE list = ?", (name,)).fetchone()[0]
    return ValueList(name, list_type, created, author, int(size))


def list_types(ws: Workspace) -> dict[str, str]:
    """Every list's name -> type (what the type checker needs)."""
    ws = opened(ws, "lists.list_types")
    with connect(ws) as con:
        return {str(n): str(t) for n, t in con.execute("SELECT name, type FROM lists")}


def all_values(ws: Workspace, names: Iterable[str]) -> dict[str, frozenset[str]]:
    """The values of the lists ``names`` (unknown names are skipped: the type checker reports them)."""
    ws = opened(ws, "lists.all_values")
    out: dict[str, frozenset[str]] = {}
    with connect(ws) as con:
        types = {str(n): str(t) for n, t in con.execute("SELECT name, type FROM lists")}
        for name in names:
            if name not in types:
                continue
            rows = con.execute("SELECT value FROM list_values WHERE list = ?", (name,))
            values = (str(r[0]) for r in rows)
            if types.get(name) == "ip_address":
                # Entries added before IPv4-mapped addresses became their IPv4 form ('::ffff:a00:2').
                values = (canonical_ip(v) if v.startswith("::ffff:") else v for v in values)
            elif types.get(name) == "email_domain":
                # Entries added before internationalized names had one form ('xn--bcher-kva.de', fullwidth).
                values = (_recanonical_domain(v) for v in values)
            out[name] = frozenset(values)
    return out


def _recanonical_domain(value: str) -> str:
    """A stored email_domain entry in today's canonical form (plain lower-case ASCII already is); an entry
    that no longer is a domain stays as it is (no charge can hold it, so it matches nothing)."""
    if value.isascii() and "xn--" not in value:
        return value
    try:
        return canonical_domain(value)
    except DomainError:
        return value


def audit(ws: Workspace, name: str) -> list[AuditEntry]:
    """The list's audit trail, oldest first (also of a deleted list: its last entry says so)."""
    ws = opened(ws, "lists.audit")
    with connect(ws) as con:
        rows = con.execute(
            "SELECT at, author, action, value, note FROM list_audit WHERE list = ? ORDER BY id", (name,)
        ).fetchall()
        if not rows:
            _require(con, name)  # an unknown name: the nearest known one suggested
        return [AuditEntry(*r) for r in rows]
