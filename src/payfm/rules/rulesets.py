"""Versioned rulesets with history, in the workspace's ``rules.db``.

``check`` parses and type checks rule text against the attribute catalog of a feature set and the
workspace's lists; ``save`` stores a checked text as the next version (with author, note, sha256) and can
make it active; ``active``/``get``/``history`` read them back; ``load`` compiles a version for evaluation.

Example:
    >>> import tempfile
    >>> from payfm.events.workspace import Workspace
    >>> ws = Workspace.open(tempfile.mkdtemp(), create=True)
    >>> save(ws, "block if :risk_score: >= 80", author="ana", activate=True).version
    1
    >>> active(ws).text
    'block if :risk_score: >= 80'
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import datetime

from payfm.events.cards import contains_card_number
from payfm.events.workspace import Workspace
from payfm.features.catalog import feature_set
from payfm.rules import ast
from payfm.rules.catalog import AttributeCatalog, check_types
from payfm.rules.catalog import type_errors as catalog_type_errors
from payfm.rules.compiler import Ruleset, compile_rules
from payfm.rules.db import connect, default_author, now_iso
from payfm.rules.grammar import parse_rule, parse_rules
from payfm.rules.limits import INVISIBLE, RuleError, control_character, format_character
from payfm.rules.lists import all_values, list_types

DEFAULT_FEATURE_SET = "default"
CANDIDATE = "candidate"  # the name of a candidate rule written without one


@dataclass(frozen=True)
class RulesetVersion:
    version: int
    created: str
    author: str
    sha256: str
    text: str
    note: str
    feature_set: str


_UTF8_BOM = b"\xef\xbb\xbf"


def decode_text(data: bytes, source: str) -> str:
    r"""The rule text of a file's bytes ``data`` (``source``: its name, for messages): UTF-8, with a leading
    byte order mark (what Windows editors write) dropped. UTF-16 (a BOM, or NUL bytes) and other bytes that
    are not UTF-8 raise a :class:`RuleError` naming the file, the place and the ``iconv`` command that
    converts it. The bytes themselves are never quoted.

    >>> decode_text(b"\xef\xbb\xbfblock if :risk_score: >= 80\n", "r.txt")
    'block if :risk_score: >= 80\n'
    """
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM) :]
    utf16 = data.startswith((b"\xff\xfe", b"\xfe\xff"))
    if utf16 or b"\x00" in data:
        if utf16:
            what, encoding = "UTF-16 (it starts with a UTF-16 byte order mark)", "UTF-16"
        else:  # no BOM: ASCII text in UTF-16 has its NULs at odd (little-endian) or even positions
            little = data[1::2].count(0) >= data[0::2].count(0)
            what = "UTF-16 or another encoding with NUL bytes (it holds NUL bytes)"
            encoding = "UTF-16LE" if little else "UTF-16BE"
        raise RuleError(
            f"Rules file '{source}' must be UTF-8 text. Got {what}; save it as UTF-8, or convert it with "
            f"`iconv -f {encoding} -t UTF-8 '{source}' > rules-utf8.txt`."
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise RuleError(
            f"Rules file '{source}' must be UTF-8 text. Got byte 0x{data[e.start]:02x} on line {line}, byte "
            f"{column}, which is not UTF-8 (Latin-1 or Windows-1252?); save it as UTF-8, or convert it with "
            f"`iconv -f WINDOWS-1252 -t UTF-8 '{source}' > rules-utf8.txt`."
        ) from None


def catalog_for(set_name: str = DEFAULT_FEATURE_SET, ws: Workspace | None = None) -> AttributeCatalog:
    """The attributes rules on feature set ``set_name`` may read (a set of ``ws``'s own too)."""
    return AttributeCatalog.for_feature_set(feature_set(set_name, ws.root if ws is not None else None))


def check(
    ws: Workspace | None, text: str, set_name: str = DEFAULT_FEATURE_SET, *, values: bool = True
) -> list[ast.Rule]:
    """Parse and type check ``text``; returns its rules or raises the first :class:`RuleError`.

    ``values=False`` reads a saved version: it skips the checks added since versions were first saved (of
    literals against the values a charge field can hold, of invisible formatting characters), so that those
    saved before them keep loading (a server would not start otherwise).
    """
    rules = parse_rules(text, saved=not values)
    check_types(rules, catalog_for(set_name, ws), list_types(ws) if ws is not None else {}, values=values)
    return rules


def type_errors(
    ws: Workspace | None, text: str, set_name: str = DEFAULT_FEATURE_SET
) -> tuple[list[ast.Rule], list[RuleError]]:
    """The rules of ``text`` and every type error in them (values checked as at save), in rule order; a
    syntax error is raised."""
    rules = parse_rules(text)
    lists = list_types(ws) if ws is not None else {}
    return rules, catalog_type_errors(rules, catalog_for(set_name, ws), lists)


def compile_text(
    ws: Workspace | None, text: str, set_name: str = DEFAULT_FEATURE_SET, *, values: bool = True
) -> Ruleset:
    """Check ``text`` and compile it with the current contents of the lists it uses (``values``: as in
    :func:`check`; False for a saved version)."""
    rules = check(ws, text, set_name, values=values)
    used = set().union(*(ast.lists(r.condition) for r in rules)) if rules else set()
    contents = all_values(ws, used) if ws is not None and used else {}
    return compile_rules(rules, contents, catalog_for(set_name, ws).types)


def _located_in(e: RuleError, text: str) -> RuleError:
    """``e``, raised on ``text`` with its line breaks read as spaces, located in ``text`` itself."""
    if e.column is None:
        return RuleError(e.detail, rule=e.rule)
    offset = min(max(e.column - 1, 0), len(text))
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return RuleError(e.detail, line=line, column=column, rule=e.rule)


def candidate_set(ws: Workspace, set_name: str | None = None) -> str:
    """The feature set a candidate rule added to the active ruleset runs on: the active version's (the one it
    was saved with, which the decision service runs it on; ``default`` without an active version).

    ``set_name``, when given, must be that set: a rule added to the active ruleset cannot run on another
    (a RuleError naming both sets).
    """
    return _candidate_set(active(ws), set_name)


def _candidate_set(current: RulesetVersion | None, set_name: str | None) -> str:
    if current is None:
        return set_name if set_name is not None else DEFAULT_FEATURE_SET
    if set_name is not None and set_name != current.feature_set:
        raise RuleError(
            f"A candidate rule is added to the active ruleset v{current.version}, which runs on feature set "
            f"'{current.feature_set}' (the set it was saved with): the candidate must run on "
            f"'{current.feature_set}' too. Got feature set '{set_name}' (--set). Leave --set out, or to try "
            f"rules on '{set_name}', backtest a whole ruleset FILE with --set {set_name} against it."
        )
    return current.feature_set


def with_candidate(ws: Workspace, rule_text: str, set_name: str | None = None) -> Ruleset:
    """The active ruleset (as saved) plus one candidate rule, compiled: what ``backtest --rule`` replays.

    The combined ruleset runs on the active version's feature set (:func:`candidate_set`; ``set_name``, when
    given, must be it). The candidate gets every check of new text, and its errors give lines and columns in
    ``rule_text`` as written (its line breaks are spaces to the parser: one rule). Without a name it is
    called ``candidate``.

    Example:
        >>> import tempfile
        >>> ws = Workspace.open(tempfile.mkdtemp(), create=True)
        >>> [r.name for r in with_candidate(ws, "block if :amount_usd: > 500").rules]
        ['candidate']
    """
    current = active(ws)
    set_name = _candidate_set(current, set_name)
    saved = check(ws, current.text, set_name, values=False) if current is not None else []
    try:
        rule = parse_rule(rule_text.replace("\n", " "))
        if rule.name == f"{rule.action}_line_1":
            taken = {r.name for r in saved}
            name = next(
                n
                for n in (CANDIDATE, *(f"{CANDIDATE}_{i}" for i in range(2, len(saved) + 3)))
                if n not in taken
            )
            rule = replace(rule, name=name)
        check_types([rule], catalog_for(set_name, ws), list_types(ws))
    except RuleError as e:
        raise _located_in(e, rule_text) from None
    clash = next((r for r in saved if r.name == rule.name), None)
    if clash is not None:
        assert current is not None
        raise RuleError(
            f"Rule name '{rule.name}' is already used by the active ruleset (v{current.version}, line "
            f"{clash.line}). Give the candidate another name, or none.",
            rule=rule.name,
        )
    rules = [*saved, replace(rule, line=0)]  # line 0: not a line of a file
    used = set().union(*(ast.lists(r.condition) for r in rules))
    return compile_rules(rules, all_values(ws, used) if used else {}, catalog_for(set_name, ws).types)


def check_note(note: str, author: str | None = None) -> None:
    """Refuse a ruleset's note or author that `rules history` could not print as written: a card number,
    a control character (a note's tabs and line breaks are layout) or an invisible one (a RuleError)."""
    if contains_card_number(note) or contains_card_number(author or ""):
        raise RuleError("A ruleset's note and author must not contain a card number (PAN).")
    for what, value in (("note", note.replace("\t", " ").replace("\n", " ")), ("author", author or "")):
        if (control := control_character(value)) is not None:  # printed by `rules history`
            raise RuleError(f"A ruleset's {what} must not contain control characters. {control}")
        if (invisible := format_character(value)) is not None:  # a bidi override reorders what it prints
            raise RuleError(f"A ruleset's {what} must not contain {INVISIBLE}. {invisible}")


def save(
    ws: Workspace,
    text: str,
    *,
    note: str = "",
    author: str | None = None,
    activate: bool = False,
    set_name: str = DEFAULT_FEATURE_SET,
    at: datetime | None = None,
) -> RulesetVersion:
    """Check ``text`` and store it as the next version (made active with ``activate``)."""
    check(ws, text, set_name)
    check_note(note, author)
    digest = hashlib.sha256(text.encode()).hexdigest()
    who, when = author or default_author(), now_iso(at)
    with connect(ws) as con:
        row = con.execute("SELECT coalesce(max(version), 0) FROM rulesets").fetchone()
        version = int(row[0]) + 1
        con.execute(
            "INSERT INTO rulesets VALUES (?, ?, ?, ?, ?, ?, ?)",
            (version, when, who, digest, text, note, set_name),
        )
        if activate:
            con.execute("INSERT OR REPLACE INTO active_ruleset (id, version) VALUES (1, ?)", (version,))
    return RulesetVersion(version, when, who, digest, text, note, set_name)


def _row(r: tuple[object, ...]) -> RulesetVersion:
    return RulesetVersion(int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), str(r[5]), str(r[6]))  # type: ignore[call-overload]


def get(ws: Workspace, version: int) -> RulesetVersion:
    with connect(ws) as con:
        r = con.execute("SELECT * FROM rulesets WHERE version = ?", (version,)).fetchone()
        if r is None:
            last = con.execute("SELECT max(version) FROM rulesets").fetchone()[0]
            have = f"versions 1 to {last}" if last else "no versions yet"
            raise RuleError(f"Ruleset version {version} does not exist; the workspace has {have}.")
        return _row(r)


def active(ws: Workspace) -> RulesetVersion | None:
    """The active ruleset version, or None before the first ``apply``."""
    with connect(ws) as con:
        r = con.execute(
            "SELECT r.* FROM active_ruleset a JOIN rulesets r USING (version) WHERE a.id = 1"
        ).fetchone()
        return _row(r) if r else None


def activate(ws: Workspace, version: int) -> RulesetVersion:
    """Make an existing version active again (a rollback)."""
    v = get(ws, version)
    with connect(ws) as con:
        con.execute("INSERT OR REPLACE INTO active_ruleset (id, version) VALUES (1, ?)", (version,))
    return v


def history(ws: Workspace) -> list[RulesetVersion]:
    """Every version, newest first."""
    with connect(ws) as con:
        return [_row(r) for r in con.execute("SELECT * FROM rulesets ORDER BY version DESC")]


def load_active(ws: Workspace) -> Ruleset | None:
    """The active ruleset compiled for the decision service (None when there is none)."""
    v = active(ws)
    return None if v is None else compile_text(ws, v.text, v.feature_set, values=False)
