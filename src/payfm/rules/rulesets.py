"""Versioned rulesets with history, in the workspace's ``rules.db``.

``check`` parses and type checks rule text against the attribute catalog of a feature set and the
workspace's lists; ``save`` stores a checked text as the next version (with author, note, sha256) and can
make it active; ``active``/``get``/``history`` read them back; ``load_active`` compiles the active version
for evaluation.

Every change of the active version is logged (``activations``: when, author, version, the version before,
note), in the transaction that makes it: ``save(..., activate=True)``, ``activate`` (a stored version) and
``rollback``, which undoes the newest activation not undone yet, like an editor's undo: after v1, v2, v3,
two rollbacks give v2 then v1 (see :func:`rollback_point`).

Example:
    >>> import tempfile
    >>> from payfm.events.workspace import Workspace
    >>> ws = Workspace.open(tempfile.mkdtemp(), create=True)
    >>> save(ws, "block if :risk_score: >= 80", author="ana", activate=True).version
    1
    >>> active(ws).text
    'block if :risk_score: >= 80'
    >>> save(ws, "block if :risk_score: >= 70", author="ana", activate=True).version
    2
    >>> rollback(ws, note="too many blocks", author="bo").version
    1
    >>> [(a.version, a.previous, a.action) for a in activations(ws)]
    [(1, 2, 'rollback'), (2, 1, 'apply'), (1, None, 'apply')]
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final, Literal

from payfm.errors import ConfigError
from payfm.events.workspace import Workspace, opened
from payfm.features.catalog import feature_set
from payfm.rules import ast
from payfm.rules.catalog import AttributeCatalog, check_types
from payfm.rules.catalog import type_errors as catalog_type_errors
from payfm.rules.compiler import Ruleset, compile_rules
from payfm.rules.db import connect, default_author, now_iso
from payfm.rules.grammar import parse_rule, parse_rules
from payfm.rules.grammar import rule_text as checked_text
from payfm.rules.limits import RuleError, check_note, line_breaks
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


# What a change of the active version expects to replace: a version, None (no active version), or ANY (not
# checked). A command that backtests against the active version passes it, so that a change made meanwhile by
# another analyst is refused instead of being compared with what is no longer active.
ANY: Final = "any"
Replacing = int | None | Literal["any"]


@dataclass(frozen=True)
class Activation:
    """One change of the active ruleset, from the activation log (newest has the highest ``id``)."""

    id: int
    at: str  # when, ISO-8601 UTC (as a version's ``created``)
    author: str
    version: int  # the version made active
    previous: int | None  # the version active before (None: none was)
    note: str
    action: str  # 'apply' (saved and made active), 'activate' (a stored version) or 'rollback'
    rollback_of: int | None = None  # a rollback: the id of the activation it undid
    undone_by: int | None = None  # the id of the rollback that undid this activation (None: not undone)


@dataclass(frozen=True)
class Baseline:
    """What a backtest compares a candidate with: a compiled ruleset (None: everything is authorized), the
    feature set it runs on, and how a report names it ("active ruleset v3", "ruleset v2")."""

    ruleset: Ruleset | None
    feature_set: str
    label: str
    version: int | None = None  # the stored version (None: none active, or a ruleset from a file)


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
    ws = _workspace(ws, "catalog_for")
    return AttributeCatalog.for_feature_set(feature_set(set_name, ws.root if ws is not None else None))


def _opened(ws: Workspace, who: str) -> Workspace:
    """``ws`` checked (:func:`~payfm.events.workspace.opened`), the error naming ``rulesets.<who>``."""
    return opened(ws, f"rulesets.{who}")


def _workspace(ws: Workspace | None, who: str) -> Workspace | None:
    """``ws`` checked (:func:`~payfm.events.workspace.opened`) where a function of this module takes one
    or None (a path gave ``'str' object has no attribute 'root'``, before), named as called:
    ``rulesets.<who>``."""
    return None if ws is None else opened(ws, f"rulesets.{who}")


def check(
    ws: Workspace | None, text: str, set_name: str = DEFAULT_FEATURE_SET, *, values: bool = True
) -> list[ast.Rule]:
    """Parse and type check ``text``; returns its rules or raises the first :class:`RuleError`.

    ``values=False`` reads a saved version: it skips the checks added since versions were first saved (of
    literals against the values a charge field can hold, of invisible formatting characters), so that those
    saved before them keep loading (a server would not start otherwise).
    """
    ws, text = _workspace(ws, "check"), checked_text(text, "rulesets.check")
    rules = parse_rules(text, saved=not values)
    check_types(rules, catalog_for(set_name, ws), list_types(ws) if ws is not None else {}, values=values)
    return rules


def type_errors(
    ws: Workspace | None, text: str, set_name: str = DEFAULT_FEATURE_SET
) -> tuple[list[ast.Rule], list[RuleError]]:
    """The rules of ``text`` and every type error in them (values checked as at save), in rule order; a
    syntax error is raised."""
    ws, text = _workspace(ws, "type_errors"), checked_text(text, "rulesets.type_errors")
    rules = parse_rules(text)
    lists = list_types(ws) if ws is not None else {}
    return rules, catalog_type_errors(rules, catalog_for(set_name, ws), lists)


def compile_text(
    ws: Workspace | None, text: str, set_name: str = DEFAULT_FEATURE_SET, *, values: bool = True
) -> Ruleset:
    """Check ``text`` and compile it with the current contents of the lists it uses (``values``: as in
    :func:`check`; False for a saved version). ``text`` is the rules' text: a file's, ``path.read_text()``.
    """
    ws, text = _workspace(ws, "compile_text"), checked_text(text, "rulesets.compile_text")
    rules = check(ws, text, set_name, values=values)
    used = set().union(*(ast.lists(r.condition) for r in rules)) if rules else set()
    contents = all_values(ws, used) if ws is not None and used else {}
    return compile_rules(rules, contents, catalog_for(set_name, ws).types, feature_set=set_name)


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
    return _candidate_set(active(_opened(ws, "candidate_set")), set_name)


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


def with_candidate(ws: Workspace, rule_text: str | Sequence[str], set_name: str | None = None) -> Ruleset:
    """The active ruleset (as saved) plus candidate rules (one text, or several in order), compiled: what
    ``backtest --rule`` replays.

    The combined ruleset runs on the active version's feature set (:func:`candidate_set`; ``set_name``, when
    given, must be it). The candidate gets every check of new text, and its errors give lines and columns in
    ``rule_text`` as written (its line breaks are spaces to the parser: one rule; of several, the error
    says which, counted from 1). Without a name one is called ``candidate`` (then ``candidate_2``...).

    Example:
        >>> import tempfile
        >>> ws = Workspace.open(tempfile.mkdtemp(), create=True)
        >>> [r.name for r in with_candidate(ws, "block if :amount_usd: > 500").rules]
        ['candidate']
    """
    ws = _opened(ws, "with_candidate")
    current = active(ws)
    set_name = _candidate_set(current, set_name)
    saved = check(ws, current.text, set_name, values=False) if current is not None else []
    several = isinstance(rule_text, Sequence) and not isinstance(rule_text, str | bytes)
    given: list[object] = list(rule_text) if several else [rule_text]
    texts = [
        checked_text(t, "rulesets.with_candidate", f"rule_text[{i}]" if several else "rule_text")
        for i, t in enumerate(given)
    ]
    rules = list(saved)
    catalog, types = catalog_for(set_name, ws), list_types(ws)
    for i, text in enumerate(texts, 1):
        which = f"--rule {i} of {len(texts)}: " if len(texts) > 1 else ""
        try:
            rule = parse_rule(text.replace("\n", " "))
            if rule.name == f"{rule.action}_line_1":
                taken = {r.name for r in rules}
                name = next(
                    n
                    for n in (CANDIDATE, *(f"{CANDIDATE}_{k}" for k in range(2, len(rules) + 3)))
                    if n not in taken
                )
                rule = replace(rule, name=name)
            check_types([rule], catalog, types)
        except RuleError as e:
            raise _located_in(e, text).prefixed(which) from None  # `--rule 2 of 3: rule 'x' line 1, ...`
        clash = next((r for r in rules if r.name == rule.name), None)
        if clash is not None:
            owner = "another --rule"
            if clash.line and current is not None:
                owner = f"the active ruleset (v{current.version}, line {clash.line})"
            raise RuleError(
                f"{which}Rule name '{rule.name}' is already used by {owner}. Give the candidate another "
                "name, or none.",
                rule=rule.name,
            )
        rules.append(replace(rule, line=0))  # line 0: not a line of a file
    used = set().union(*(ast.lists(r.condition) for r in rules))
    return compile_rules(rules, all_values(ws, used) if used else {}, catalog.types, feature_set=set_name)


def save(
    ws: Workspace,
    text: str,
    *,
    note: str = "",
    author: str | None = None,
    activate: bool = False,
    set_name: str = DEFAULT_FEATURE_SET,
    at: datetime | None = None,
    replacing: Replacing = ANY,
    allow_empty: bool = False,
) -> RulesetVersion:
    """Check ``text`` and store it as the next version (made active with ``activate``, which the activation
    log records with the same time, author and note; with ``replacing``, refused when that version (None:
    none) is not the active one any more: the caller compared against it, as ``rules apply`` does). Made
    active, the active version's own text on its own set is refused: it would change nothing; and a text of
    no rules, unless ``allow_empty``: a truncated file would turn every rule off."""
    ws, text = _opened(ws, "save"), checked_text(text, "rulesets.save")
    rules = check(ws, text, set_name)
    if activate and not allow_empty:
        require_rules(rules)
    note = line_breaks(note)  # a note typed on Windows: its CR LF line breaks are line breaks
    check_note(note, author)
    digest = hashlib.sha256(text.encode()).hexdigest()
    who, when = author or default_author(), now_iso(at)
    # The write lock first, activated or not: the next version number is read before the insert, and two
    # saves reading the same one would collide on it.
    with connect(ws, immediate=True) as con:
        if activate:  # the active text again: a new version would change nothing but the history
            same = con.execute(
                "SELECT r.version FROM active_ruleset a JOIN rulesets r USING (version) "
                "WHERE a.id = 1 AND r.sha256 = ? AND r.feature_set = ?",
                (digest, set_name),
            ).fetchone()
            if same is not None:
                raise RuleError(
                    f"Ruleset v{same[0]} is active with this text already (sha256 {digest[:12]}, feature set "
                    f"'{set_name}'); nothing changed. Expected a changed ruleset."
                )
        row = con.execute("SELECT coalesce(max(version), 0) FROM rulesets").fetchone()
        version = int(row[0]) + 1
        con.execute(
            "INSERT INTO rulesets VALUES (?, ?, ?, ?, ?, ?, ?)",
            (version, when, who, digest, text, note, set_name),
        )
        if activate:  # logged with the version's own note: why this version
            _switch(con, version, action="apply", note=note, who=who, when=when, replacing=replacing)
    return RulesetVersion(version, when, who, digest, text, note, set_name)


def require_rules(rules: Sequence[ast.Rule]) -> None:
    """Refuse a ruleset of no rules to activate: it turns every rule off (a truncated file would)."""
    if not rules:
        raise RuleError(
            "A ruleset to activate must hold a rule: one without any turns every block, review and 3-D "
            "Secure rule off. Got a text of no rules (empty, or only comments). To turn every rule off on "
            "purpose, allow it (`payfm rules apply` or `activate` --allow-empty; allow_empty=True)."
        )


def same_text(ws: Workspace, v: RulesetVersion) -> list[int]:
    """The other stored versions with ``v``'s text and feature set (``rules apply`` of an old text: the old
    version could have been activated instead)."""
    ws = _opened(ws, "same_text")
    with connect(ws) as con:
        rows = con.execute(
            "SELECT version FROM rulesets WHERE sha256 = ? AND feature_set = ? AND version != ? "
            "ORDER BY version",
            (v.sha256, v.feature_set, v.version),
        ).fetchall()
    return [int(r[0]) for r in rows]


def _row(r: tuple[object, ...]) -> RulesetVersion:
    return RulesetVersion(int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), str(r[5]), str(r[6]))  # type: ignore[call-overload]


def get(ws: Workspace, version: int) -> RulesetVersion:
    """Stored version ``version`` (a RuleError saying which versions exist when it does not)."""
    ws = _opened(ws, "get")
    with connect(ws) as con:
        # past SQLite's 64-bit integers no version exists (binding one would raise OverflowError)
        fits = -(2**63) <= version < 2**63
        r = con.execute("SELECT * FROM rulesets WHERE version = ?", (version,)).fetchone() if fits else None
        if r is None:
            last = con.execute("SELECT max(version) FROM rulesets").fetchone()[0]
            have = f"versions 1 to {last}" if last else "no versions yet"
            raise RuleError(f"Ruleset version {version} does not exist; the workspace has {have}.")
        return _row(r)


def active(ws: Workspace) -> RulesetVersion | None:
    """The active ruleset version, or None before the first ``apply``."""
    ws = _opened(ws, "active")
    with connect(ws) as con:
        r = con.execute(
            "SELECT r.* FROM active_ruleset a JOIN rulesets r USING (version) WHERE a.id = 1"
        ).fetchone()
        return _row(r) if r else None


def compile_version(ws: Workspace, v: RulesetVersion) -> Ruleset:
    """Version ``v`` compiled as the decision service loads it: on the feature set it was saved with, with the
    lists' current contents, its text checked as saved (the checks added since it was saved skipped).

    Text that no longer compiles (a list it uses is gone, its feature set no longer holds a feature it reads
    or no longer exists) raises a :class:`RuleError` naming the version.
    """
    ws = _opened(ws, "compile_version")
    try:
        return compile_text(ws, v.text, v.feature_set, values=False)
    except RuleError as e:
        raise RuleError(
            f"Ruleset v{v.version} no longer compiles on its feature set '{v.feature_set}': {e}"
        ) from None
    except ConfigError as e:  # its feature set is gone (a workspace's set, deleted or unreadable)
        raise RuleError(f"Ruleset v{v.version} no longer compiles: {e}") from None


def baseline(ws: Workspace, version: int | None = None) -> Baseline:
    """The baseline of a backtest: stored version ``version`` (default: the active one; none active:
    everything authorized), compiled on the feature set it was saved with (:func:`compile_version`), as the
    decision service runs it.

    Example:
        >>> import tempfile
        >>> ws = Workspace.open(tempfile.mkdtemp(), create=True)
        >>> baseline(ws).label
        'no active ruleset (everything authorized)'
        >>> v = save(ws, "block if :amount_usd: > 500", author="ana")
        >>> baseline(ws, v.version).label
        'ruleset v1'
    """
    ws = _opened(ws, "baseline")
    if version is None:
        v = active(ws)
        if v is None:
            return Baseline(None, DEFAULT_FEATURE_SET, "no active ruleset (everything authorized)")
        return Baseline(compile_version(ws, v), v.feature_set, f"active ruleset v{v.version}", v.version)
    v = get(ws, version)
    return Baseline(compile_version(ws, v), v.feature_set, f"ruleset v{v.version}", v.version)


def _already_active(version: int) -> RuleError:
    return RuleError(
        f"Ruleset v{version} is already active; nothing changed. Expected another version "
        "(`payfm rules history` lists them)."
    )


def activatable(ws: Workspace, version: int, allow_empty: bool = False) -> tuple[RulesetVersion, Ruleset]:
    """Stored version ``version`` and its compiled ruleset (:func:`compile_version`), when it can be made
    active: a :class:`RuleError` when it does not exist, is the active one, no longer compiles, or holds no
    rule (unless ``allow_empty``: it turns every rule off). What ``rules activate`` checks before its
    backtest; :func:`activate` checks it again."""
    ws = _opened(ws, "activatable")
    v = get(ws, version)
    current = active(ws)
    if current is not None and current.version == v.version:
        raise _already_active(v.version)
    compiled = compile_version(ws, v)
    if not allow_empty:
        require_rules(compiled.rules)
    return v, compiled


def _switch(
    con: sqlite3.Connection,
    version: int,
    *,
    action: str,
    note: str,
    who: str,
    when: str,
    rollback_of: int | None = None,
    replacing: Replacing = ANY,
) -> int | None:
    """Make ``version`` active and log it, in ``con``'s transaction (begun immediate: what it reads holds);
    returns the version active before."""
    row = con.execute("SELECT version FROM active_ruleset WHERE id = 1").fetchone()
    previous = int(row[0]) if row is not None else None
    # the lists it reads, checked again under the write lock (compiled before it: `lists delete` may have
    # deleted one meanwhile, and the decision service could not load the version)
    text = con.execute("SELECT text FROM rulesets WHERE version = ?", (version,)).fetchone()[0]
    reads = set().union(*(ast.lists(r.condition) for r in parse_rules(text, saved=True)))
    have = {r[0] for r in con.execute("SELECT name FROM lists")} if reads else set()
    if gone := sorted(reads - have):
        raise RuleError(
            f"Ruleset v{version} reads the list {', '.join(f'@{n}' for n in gone)}, deleted meanwhile; "
            "nothing changed."
        )
    if previous == version:
        raise _already_active(version)
    if replacing != ANY and previous != replacing:
        now = f"v{previous}" if previous is not None else "none"
        was = f"v{replacing}" if replacing is not None else "no active ruleset"
        raise RuleError(
            f"The active ruleset changed meanwhile: expected {was} (what the change was compared "
            f"with) to be active. Got {now}; nothing changed. Run the command again."
        )
    con.execute("INSERT OR REPLACE INTO active_ruleset (id, version) VALUES (1, ?)", (version,))
    con.execute(
        "INSERT INTO ruleset_activations (at, author, version, previous, note, action, rollback_of) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (when, who, version, previous, note, action, rollback_of),
    )
    return previous


def activate(
    ws: Workspace,
    version: int,
    *,
    note: str = "",
    author: str | None = None,
    at: datetime | None = None,
    replacing: Replacing = ANY,
    allow_empty: bool = False,
) -> RulesetVersion:
    """Make stored version ``version`` active (an earlier one: a rollback by number), logging who, when,
    why (``note``) and the version it replaces in the activation log, in the same transaction.

    Refused with a :class:`RuleError` (nothing changes) when ``version`` does not exist, is already active
    or no longer compiles (:func:`compile_version`: the decision service could not load it); with
    ``replacing``, also when that version (None: none) is not the active one any more (the caller compared
    against it).
    A running decision service serves the new version after ``POST /v1/admin/reload``.

    Example:
        >>> import tempfile
        >>> ws = Workspace.open(tempfile.mkdtemp(), create=True)
        >>> for t in ("block if :amount_usd: > 500", "block if :amount_usd: > 900"):
        ...     _ = save(ws, t, author="ana", activate=True)
        >>> activate(ws, 1, note="v2 let card testing through", author="bo").version
        1
        >>> activations(ws)[0].previous
        2
    """
    ws = _opened(ws, "activate")
    note = line_breaks(note)  # a note typed on Windows: its CR LF line breaks are line breaks
    check_note(note, author)
    activatable(ws, version, allow_empty)  # before the write lock: compiling reads the lists
    with connect(ws, immediate=True) as con:
        _switch(
            con,
            version,
            action="activate",
            note=note,
            who=author or default_author(),
            when=now_iso(at),
            replacing=replacing,
        )
    return get(ws, version)


def _activation(r: tuple[Any, ...]) -> Activation:
    id_, at, author, version, previous, note, action, rollback_of = r
    return Activation(
        int(id_), str(at), str(author), int(version), previous, str(note), str(action), rollback_of
    )


def _read_activations(con: sqlite3.Connection) -> list[Activation]:
    rows = con.execute(
        "SELECT id, at, author, version, previous, note, action, rollback_of FROM ruleset_activations "
        "ORDER BY id DESC"
    )
    log = [_activation(r) for r in rows]
    undone = {a.rollback_of: a.id for a in log if a.rollback_of is not None}
    return [replace(a, undone_by=undone.get(a.id)) for a in log]


def activations(ws: Workspace) -> list[Activation]:
    """The activation log, newest first: every change of the active ruleset since the workspace's
    ``rules.db`` has the log (``undone_by``: the rollback that undid an activation)."""
    ws = _opened(ws, "activations")
    with connect(ws) as con:
        return _read_activations(con)


def _undo_point(log: list[Activation], current: RulesetVersion | None) -> Activation:
    if current is None:
        raise RuleError(
            "There is no active ruleset to roll back. Expected one made active by `payfm rules apply FILE` "
            "or `payfm rules activate VERSION`."
        )
    point = next((a for a in log if a.rollback_of is None and a.undone_by is None), None)
    if point is None or point.version != current.version or point.previous is None:
        if point is not None and point.version == current.version:
            why = f"records no version active before it (its activation #{point.id} was the first)"
        elif point is None and log:
            why = "holds no activation left to undo (the rollbacks undid every one)"
        else:
            why = "records no activation of it (it was made active before activations were logged)"
        raise RuleError(
            f"Cannot roll back: ruleset v{current.version} is active, and the activation log {why}. "
            "Make a version active by number: `payfm rules activate VERSION` (`payfm rules history` lists "
            "them)."
        )
    return point


def rollback_point(ws: Workspace) -> Activation:
    """The activation a rollback undoes now: the newest one that is neither a rollback nor undone by one.
    It made the active version active; a rollback makes its ``previous`` active again.

    So rollbacks walk back like an editor's undo, never redo: after activations of v1, v2, v3, a rollback
    undoes v3's (v2 active), the next one v2's (v1 active), and a third is refused (v1's had no previous).
    An activation after a rollback (``apply``, ``activate``) is undone first. A :class:`RuleError` when
    there is no active ruleset, or the log holds nothing to undo for it.
    """
    ws = _opened(ws, "rollback_point")
    with connect(ws) as con:
        log = _read_activations(con)
    return _undo_point(log, active(ws))


def rollback(
    ws: Workspace,
    *,
    note: str = "",
    author: str | None = None,
    at: datetime | None = None,
    to: int | None = None,
    undoing: int | None = None,
) -> RulesetVersion:
    """Undo the activation of :func:`rollback_point`: make the version active before it active again,
    logged as a ``rollback`` of it (with ``note`` and ``author``). Returns the version now active.

    Refused with a :class:`RuleError` (nothing changes) where :func:`rollback_point` is, when that version
    no longer compiles, or when the log changed meanwhile: with ``to`` (the version the caller compared,
    e.g. backtested), when the rollback would now make another version active; with ``undoing`` (the
    activation id the caller announced), when it would undo another activation (another analyst's
    rollback and apply in between can leave the same version to restore, undoing their new one).
    """
    ws = _opened(ws, "rollback")
    note = line_breaks(note)  # a note typed on Windows: its CR LF line breaks are line breaks
    check_note(note, author)

    def moved(now: Activation, target: int) -> RuleError:
        return RuleError(
            f"The activation log changed meanwhile: a rollback now makes v{now.previous} active. "
            f"Expected v{target}; nothing changed. Run the command again."
        )

    point = rollback_point(ws)
    assert point.previous is not None  # _undo_point refuses an activation without one
    target = to if to is not None else point.previous
    if point.previous != target:
        raise moved(point, target)
    # before the write lock: compiling reads the lists (an empty one too: it was active, it is restored)
    activatable(ws, target, allow_empty=True)
    with connect(ws, immediate=True) as con:
        current = con.execute(
            "SELECT r.* FROM active_ruleset a JOIN rulesets r USING (version) WHERE a.id = 1"
        ).fetchone()
        now = _undo_point(_read_activations(con), _row(current) if current else None)
        if now.previous != target:
            raise moved(now, target)
        if undoing is not None and now.id != undoing:
            raise RuleError(
                f"The activation log changed meanwhile: a rollback now undoes activation #{now.id} "
                f"(v{now.version}). Expected #{undoing}; nothing changed. Run the command again."
            )
        _switch(
            con,
            target,
            action="rollback",
            note=note,
            who=author or default_author(),
            when=now_iso(at),
            rollback_of=now.id,
        )
    return get(ws, target)


def history(ws: Workspace) -> list[RulesetVersion]:
    """Every version, newest first."""
    ws = _opened(ws, "history")
    with connect(ws) as con:
        return [_row(r) for r in con.execute("SELECT * FROM rulesets ORDER BY version DESC")]


def load_active(ws: Workspace) -> Ruleset | None:
    """The active ruleset compiled for the decision service (None when there is none)."""
    ws = _opened(ws, "load_active")
    v = active(ws)
    return None if v is None else compile_text(ws, v.text, v.feature_set, values=False)
