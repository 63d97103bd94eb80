"""Activating stored ruleset versions: the activation log, `rules activate`, `rules rollback`, the activations
`rules history` lists and `rules backtest --against`.

An analyst's audit found no CLI to go back to an earlier version, no trace of who activated what and when, and
no way to backtest a candidate against anything but the active ruleset. Rollbacks walk back through the log
like an editor's undo (never redo), so two rollbacks never oscillate between two versions; each test below
would fail on an implementation that took "the previous of the newest entry" instead.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.events.workspace import Workspace
from payfm.features.catalog import feature_set, set_path
from payfm.features.definitions import Aggregate, FeatureSet
from payfm.rules import lists, rulesets
from payfm.rules.backtest import backtest
from payfm.rules.db import now_iso
from payfm.rules.limits import RuleError
from payfm.synth import WorldConfig, generate_world

T = [datetime(2026, 3, 1, 12, tzinfo=UTC) + timedelta(hours=h) for h in range(10)]
REVIEW = "big: review if :amount_usd: > 300\n"  # blocks nothing
BLOCK = "big: review if :amount_usd: > 300\nvel: block if :card.count_charges_1h: > 1\n"


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace.open(tmp_path / "ws", create=True)


def log_of(ws: Workspace) -> list[tuple[object, ...]]:
    """The activation log, newest first: (version, previous, action, rollback_of, undone_by)."""
    return [(a.version, a.previous, a.action, a.rollback_of, a.undone_by) for a in rulesets.activations(ws)]


def applied(ws: Workspace, *texts: str) -> None:
    """Save and activate each text in turn, as `rules apply` does (v1, v2, ...)."""
    for i, text in enumerate(texts):
        rulesets.save(ws, text, activate=True, author="ana", note=f"n{i + 1}", at=T[i])


def active_version(ws: Workspace) -> int | None:
    v = rulesets.active(ws)
    return v.version if v is not None else None


# ---- the log ----------------------------------------------------------------------------------------------


def test_every_activation_is_logged_with_when_who_what_before_and_why(ws: Workspace) -> None:
    rulesets.save(ws, "block if :amount_usd: > 500", activate=True, author="ana", note="first", at=T[0])
    rulesets.save(ws, "block if :amount_usd: > 900", activate=True, author="bo", note="looser", at=T[1])
    rulesets.save(ws, "block if :amount_usd: > 700", author="cy", note="draft", at=T[2])  # not activated
    assert len(rulesets.activations(ws)) == 2  # saving without activating logs nothing
    v = rulesets.activate(ws, 1, note="v2 let card testing through", author="dee", at=T[3])
    assert v.version == 1 and active_version(ws) == 1
    rulesets.activate(ws, 3)  # callable as before: note and author default
    log = rulesets.activations(ws)
    assert [(a.id, a.version, a.previous, a.author, a.note, a.action) for a in log[1:]] == [
        (3, 1, 2, "dee", "v2 let card testing through", "activate"),
        (2, 2, 1, "bo", "looser", "apply"),
        (1, 1, None, "ana", "first", "apply"),
    ]
    assert (log[0].version, log[0].previous, log[0].action, log[0].note) == (3, 1, "activate", "")
    assert log[0].author  # default_author(), as a saved version's
    # an apply's entry shares its version's time; an activation's is its own
    assert [a.at for a in log[1:]] == [now_iso(T[3]), now_iso(T[1]), now_iso(T[0])]
    assert log[2].at == rulesets.get(ws, 2).created


def test_activating_the_active_version_is_refused_and_changes_nothing(ws: Workspace) -> None:
    applied(ws, "block if :amount_usd: > 500", "block if :amount_usd: > 900")
    before = rulesets.activations(ws)
    with pytest.raises(RuleError, match=re.escape("Ruleset v2 is already active; nothing changed.")):
        rulesets.activate(ws, 2, note="again")
    with pytest.raises(RuleError, match=re.escape("Ruleset version 7 does not exist; the workspace has ver")):
        rulesets.activate(ws, 7)
    with pytest.raises(RuleError, match="note must not contain control characters"):
        rulesets.activate(ws, 1, note="ok\x1b[31m")
    with pytest.raises(RuleError, match="must not contain a card number"):
        rulesets.activate(ws, 1, author="4242424242424242")
    assert rulesets.activations(ws) == before and active_version(ws) == 2


def test_an_activation_checks_what_the_caller_compared_against(ws: Workspace) -> None:
    applied(ws, "block if :amount_usd: > 500", "block if :amount_usd: > 900", "block if :amount_usd: > 700")
    with pytest.raises(RuleError, match=re.escape("expected v2 (what the change was compared with)")):
        rulesets.activate(ws, 1, replacing=2)  # v3 was made active after the caller's backtest
    assert active_version(ws) == 3
    assert rulesets.activate(ws, 1, replacing=3).version == 1
    with pytest.raises(RuleError, match=re.escape("a rollback now makes v3 active. Expected v2")):
        rulesets.rollback(ws, to=2)
    with pytest.raises(RuleError, match=re.escape("a rollback now makes v3 active. Expected v1")):
        rulesets.rollback(ws, to=1)  # the active version: refused as a moved log, not "already active"
    assert active_version(ws) == 1 and len(rulesets.activations(ws)) == 4


# ---- rollback: an undo through the log -------------------------------------------------------------------


def test_rollbacks_walk_back_through_the_log_and_stop_at_the_first(ws: Workspace) -> None:
    applied(ws, "block if :amount_usd: > 500", "block if :amount_usd: > 900", "block if :amount_usd: > 700")
    assert rulesets.rollback_point(ws).id == 3
    v = rulesets.rollback(ws, note="v3 blocks too much", author="bo", at=T[5])
    assert v.version == 2 and active_version(ws) == 2
    newest = rulesets.activations(ws)[0]
    assert (newest.id, newest.at, newest.author, newest.note) == (
        4,
        now_iso(T[5]),
        "bo",
        "v3 blocks too much",
    )
    assert rulesets.rollback(ws).version == 1  # not back to 3: the rollback itself is not undone
    assert log_of(ws) == [
        (1, 2, "rollback", 2, None),
        (2, 3, "rollback", 3, None),
        (3, 2, "apply", None, 4),
        (2, 1, "apply", None, 5),
        (1, None, "apply", None, None),
    ]
    with pytest.raises(RuleError) as info:
        rulesets.rollback(ws)
    message = str(info.value)
    assert "Cannot roll back: ruleset v1 is active" in message
    assert "its activation #1 was the first" in message and "`payfm rules activate VERSION`" in message
    assert len(rulesets.activations(ws)) == 5 and active_version(ws) == 1


def test_an_activation_after_rollbacks_is_undone_first_and_rollbacks_never_oscillate(ws: Workspace) -> None:
    applied(ws, "block if :amount_usd: > 500", "block if :amount_usd: > 900")
    rulesets.activate(ws, 1)  # #3: v1 again, over v2
    # "the previous of the newest entry", or of the newest entry activating the active version, would go
    # 2, 1, 2, 1 ... forever; the undo goes 2, 1 and stops
    assert [rulesets.rollback(ws).version for _ in range(2)] == [2, 1]
    with pytest.raises(RuleError, match="Cannot roll back"):
        rulesets.rollback(ws)
    # v1, v2, v3; rollback (v2); a new version v4; two rollbacks undo v4 then v2
    ws2 = Workspace.open(ws.root.parent / "ws2", create=True)
    applied(ws2, *(f"block if :amount_usd: > {n}" for n in (500, 900, 700)))
    assert rulesets.rollback(ws2).version == 2
    rulesets.save(ws2, "block if :amount_usd: > 600", activate=True)
    assert [rulesets.rollback(ws2).version for _ in range(2)] == [2, 1]
    assert [a.version for a in rulesets.activations(ws2)] == [1, 2, 4, 2, 3, 2, 1]


def test_rollback_without_an_active_ruleset_or_a_logged_activation_is_refused(ws: Workspace) -> None:
    with pytest.raises(RuleError, match=re.escape("There is no active ruleset to roll back.")):
        rulesets.rollback(ws)
    rulesets.save(ws, "block if :amount_usd: > 500")  # saved, never made active
    with pytest.raises(RuleError, match=re.escape("There is no active ruleset to roll back.")):
        rulesets.rollback_point(ws)


def test_a_workspace_made_before_the_log_gets_it_and_can_roll_back_a_logged_activation(
    tmp_path: Path,
) -> None:
    ws = Workspace.open(tmp_path / "old", create=True)
    con = sqlite3.connect(ws.root / "rules.db")  # rules.db as earlier payfm made it: no activation log
    con.executescript(
        """CREATE TABLE rulesets (version INTEGER PRIMARY KEY, created TEXT NOT NULL, author TEXT NOT NULL,
               sha256 TEXT NOT NULL, text TEXT NOT NULL, note TEXT NOT NULL, feature_set TEXT NOT NULL);
           CREATE TABLE active_ruleset (id INTEGER PRIMARY KEY CHECK (id = 1),
               version INTEGER NOT NULL REFERENCES rulesets(version));"""
    )
    for n, text in ((1, "block if :amount_usd: > 500"), (2, "block if :amount_usd: > 900")):
        con.execute("INSERT INTO rulesets VALUES (?, '2026-01-01', 'ana', '', ?, '', 'default')", (n, text))
    con.execute("INSERT INTO active_ruleset VALUES (1, 2)")
    con.commit()
    con.close()
    assert rulesets.activations(ws) == []
    with pytest.raises(RuleError) as info:
        rulesets.rollback(ws)
    assert "ruleset v2 is active, and the activation log records no activation of it" in str(info.value)
    assert "payfm rules activate VERSION" in str(info.value)
    rulesets.activate(ws, 1, note="back")
    assert log_of(ws) == [(1, 2, "activate", None, None)]
    assert rulesets.rollback(ws).version == 2  # the logged activation knows what it replaced
    with pytest.raises(
        RuleError, match=re.escape("v2 is active, and the activation log holds no activation left")
    ):
        rulesets.rollback(ws)


# ---- versions that no longer compile -----------------------------------------------------------------------


def test_a_version_whose_list_is_gone_is_refused_naming_the_version(ws: Workspace) -> None:
    lists.create_list(ws, "bad_domains", "email_domain")
    applied(ws, "block if :email_domain: in @bad_domains", "block if :amount_usd: > 900")
    with sqlite3.connect(ws.root / "rules.db") as con:  # no command deletes a list: as if one had
        con.execute("DELETE FROM lists WHERE name = 'bad_domains'")
    with pytest.raises(RuleError) as info:
        rulesets.activate(ws, 1)
    assert str(info.value).startswith("Ruleset v1 no longer compiles on its feature set 'default': ")
    assert "@bad_domains" in str(info.value)
    with pytest.raises(RuleError, match=re.escape("Ruleset v1 no longer compiles")):
        rulesets.rollback(ws)
    assert active_version(ws) == 2 and len(rulesets.activations(ws)) == 2


def test_a_version_reading_a_feature_its_set_lost_is_refused(ws: Workspace) -> None:
    def define(*features: Aggregate) -> None:
        path = set_path(ws.root, "mine")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(FeatureSet("mine", features).to_json()))

    hourly = Aggregate("card", "count", window=timedelta(hours=1), name="card.n_1h")
    daily = Aggregate("card", "count", window=timedelta(days=1), name="card.n_1d")
    define(hourly, daily)
    rulesets.save(ws, "block if :card.n_1h: > 3", activate=True, set_name="mine")
    rulesets.save(ws, "block if :card.n_1d: > 9", activate=True, set_name="mine")
    define(daily)  # `features define --replace` without card.n_1h
    with pytest.raises(RuleError) as info:
        rulesets.activate(ws, 1)
    assert str(info.value).startswith("Ruleset v1 no longer compiles on its feature set 'mine': ")
    assert "Unknown attribute ':card.n_1h:'" in str(info.value)
    set_path(ws.root, "mine").unlink()  # the set itself is gone
    with pytest.raises(
        RuleError, match=re.escape("Ruleset v1 no longer compiles: Unknown feature set 'mine'")
    ):
        rulesets.activatable(ws, 1)
    assert active_version(ws) == 2


def test_a_rollback_refuses_to_undo_another_activation_than_it_announced(ws: Workspace) -> None:
    # v1, v2, v3 applied; while one analyst's rollback (announced: undo #3, v3 -> v2) backtests, another rolls
    # back (#3 undone, v2 active) and applies v4 (#5: v2 -> v4): a rollback now also restores v2, but by
    # undoing the colleague's v4, which is not what the first analyst compared
    applied(ws, "block if :amount_usd: > 100", "block if :amount_usd: > 200", "block if :amount_usd: > 300")
    point = rulesets.rollback_point(ws)
    assert (point.id, point.version, point.previous) == (3, 3, 2)
    rulesets.rollback(ws, author="bo")
    rulesets.save(ws, "block if :amount_usd: > 400", activate=True, author="bo")
    with pytest.raises(RuleError, match=re.escape("a rollback now undoes activation #5 (v4). Expected #3")):
        rulesets.rollback(ws, to=point.previous, undoing=point.id)
    assert active_version(ws) == 4 and len(rulesets.activations(ws)) == 5


def test_applying_the_active_text_again_is_refused_and_changes_nothing(ws: Workspace) -> None:
    applied(ws, "block if :amount_usd: > 100", "block if :amount_usd: > 200")
    with pytest.raises(RuleError, match=re.escape("Ruleset v2 is active with this text already")):
        rulesets.save(ws, "block if :amount_usd: > 200", activate=True)
    assert [v.version for v in rulesets.history(ws)] == [2, 1] and len(rulesets.activations(ws)) == 2
    # an older version's text is a new version (apply), and the same text stored without activating too
    assert rulesets.save(ws, "block if :amount_usd: > 100", activate=True).version == 3
    assert rulesets.save(ws, "block if :amount_usd: > 100").version == 4


def test_a_note_typed_on_windows_keeps_its_line_breaks(ws: Workspace) -> None:
    applied(ws, "block if :amount_usd: > 100")
    v = rulesets.save(ws, "block if :amount_usd: > 200", note="why\r\nbecause", activate=True)
    assert v.note == "why\nbecause" and rulesets.activations(ws)[0].note == "why\nbecause"
    assert rulesets.rollback(ws, note="undo\r\nit").version == 1
    assert rulesets.activations(ws)[0].note == "undo\nit"
    with pytest.raises(RuleError, match="control characters"):  # other control characters stay refused
        rulesets.activate(ws, 2, note="esc \x1b[2J")


def test_an_apply_refuses_when_the_version_it_compared_with_is_no_longer_active(ws: Workspace) -> None:
    # `rules apply` backtests against v2, another analyst rolls back to v1 meanwhile: the change it printed
    # is not the change it would make, so it saves nothing (one transaction) and says so
    applied(ws, "block if :amount_usd: > 100", "block if :amount_usd: > 200")
    rulesets.rollback(ws, author="bo")
    with pytest.raises(RuleError, match=re.escape("changed meanwhile: expected v2 (what the change was")):
        rulesets.save(ws, "block if :amount_usd: > 300", activate=True, replacing=2)
    assert [v.version for v in rulesets.history(ws)] == [2, 1] and active_version(ws) == 1
    fresh = Workspace.open(ws.root.parent / "fresh", create=True)  # compared with none active: one appeared
    applied(fresh, "block if :amount_usd: > 100")
    with pytest.raises(RuleError, match=re.escape("expected no active ruleset (what the change")):
        rulesets.save(fresh, "block if :amount_usd: > 300", activate=True, replacing=None)
    assert rulesets.save(fresh, "block if :amount_usd: > 300", activate=True, replacing=1).version == 2


# ---- the CLI on a small world ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A small generated world with the `tiny` set backfilled (each test copies it)."""
    ws = Workspace.open(tmp_path_factory.mktemp("activate") / "ws", create=True)
    ws.write_stream(generate_world(WorldConfig(charges=2_000, days=12, seed=5)), "replace")
    code, out = run(ws, "features", "backfill", "--set", "tiny")
    assert code == 0, out
    return ws


@pytest.fixture
def two(world: Workspace, tmp_path: Path) -> tuple[Workspace, Path]:
    """The world (copied) with v1 = REVIEW and v2 = BLOCK applied on `tiny` (v2 active); the rules folder."""
    ws = Workspace.open(shutil.copytree(world.root, tmp_path / "ws"))
    files = tmp_path / "rules"
    files.mkdir()
    for name, text in (("review.rules", REVIEW), ("block.rules", BLOCK)):
        (files / name).write_text(text)
        code, out = run(ws, "rules", "apply", str(files / name), "--set", "tiny", "--note", name)
        assert code == 0, out
    return ws, files


def run(ws: Workspace, *args: str) -> tuple[int, str]:
    # a short label horizon: the 12-day world's labels are final but for its last 2 days
    window = ["--horizon-days", "2"] if args[:2] in (("rules", "activate"), ("rules", "rollback")) else []
    if args[:2] == ("rules", "backtest") and "--help" not in args:
        window = ["--horizon-days", "2"]
    result = CliRunner(env={"COLUMNS": "250"}).invoke(cli, ["-w", str(ws.root), *args, *window])
    return result.exit_code, result.output


def changed(out: str) -> tuple[str, int]:
    """The report's baseline label and its count of charges decided differently."""
    m = re.search(r"Change against (.+): ([\d,]+) charges? decided differently", out)
    assert m, out
    return m.group(1), int(m.group(2).replace(",", ""))


def count(out: str, what: str) -> int:
    m = re.search(rf"{re.escape(what)}:\s+([\d,]+) \(", out)
    assert m, out
    return int(m.group(1).replace(",", ""))


def one_line_error(code: int, out: str, text: str) -> None:
    assert code == 1, out
    assert "Traceback" not in out and out.count("\n") == 1 and out.startswith("Error: "), out
    assert text in out, out


def test_cli_activate_backtests_the_stored_version_then_activates_it(two: tuple[Workspace, Path]) -> None:
    ws, _ = two
    code, out = run(ws, "rules", "activate", "v1", "--note", "v2 blocks good customers")
    assert code == 0, out
    # v1 (reviews only) against v2 (blocks): the change unblocks, never blocks; the direction is v2 -> v1
    label, n = changed(out)
    assert label == "active ruleset v2" and n > 0
    assert count(out, "good customers unblocked") > 0 and count(out, "good customers newly blocked") == 0
    expected = backtest(
        ws,
        rulesets.compile_version(ws, rulesets.get(ws, 1)),
        feature_set("tiny"),
        baseline=rulesets.compile_version(ws, rulesets.get(ws, 2)),
        horizon=timedelta(days=2),
    )
    assert n == expected.change.changed
    assert "Activated ruleset v1 (sha256 " in out and "replacing v2." in out
    assert "serves v1 within a second (it follows the workspace)" in out and "--no-follow keeps" in out
    assert active_version(ws) == 1
    newest = rulesets.activations(ws)[0]
    assert (newest.version, newest.previous, newest.note) == (1, 2, "v2 blocks good customers")

    one_line_error(*run(ws, "rules", "activate", "1"), "Ruleset v1 is already active; nothing changed.")
    one_line_error(*run(ws, "rules", "activate", "9"), "Ruleset version 9 does not exist")
    huge = "9" * 20  # past SQLite's integers: no traceback (OverflowError) from `activate` or `show`
    one_line_error(*run(ws, "rules", "activate", huge), f"Ruleset version {huge} does not exist")
    one_line_error(*run(ws, "rules", "show", huge), f"Ruleset version {huge} does not exist")
    one_line_error(*run(ws, "rules", "show", "--", "-1"), "VERSION must be a ruleset version number")
    assert (
        run(ws, "rules", "show", "v1")[1].splitlines()[-1].startswith("# ruleset v1 by ")
    )  # (after the text)
    one_line_error(*run(ws, "rules", "activate", "one"), "VERSION must be a ruleset version number")
    code, out = run(ws, "rules", "activate", "2", "--note", "card 4242424242424242")
    one_line_error(code, out, "must not contain a card number")
    assert "4242424242424242" not in out and len(rulesets.activations(ws)) == 3


def test_cli_rollback_twice_then_refused_and_history_shows_the_log(two: tuple[Workspace, Path]) -> None:
    ws, _ = two
    code, out = run(ws, "rules", "rollback", "--note", "too many blocks")
    assert code == 0, out
    assert "Rolling back activation #2 (" in out and "v2 -> v1" in out
    assert changed(out)[0] == "active ruleset v2" and count(out, "good customers unblocked") > 0
    assert "Rolled back to ruleset v1" in out and "replacing v2." in out and active_version(ws) == 1
    one_line_error(*run(ws, "rules", "rollback"), "Cannot roll back: ruleset v1 is active")
    code, out = run(ws, "rules", "activate", "2")
    assert code == 0, out
    code, out = run(ws, "rules", "rollback")  # undoes #4 (the activation of v2), back to v1
    assert code == 0 and "Rolling back activation #4" in out and active_version(ws) == 1, out
    code, out = run(ws, "rules", "rollback")
    one_line_error(code, out, "`payfm rules activate VERSION`")

    code, out = run(ws, "rules", "history")
    assert code == 0, out
    assert "Ruleset versions" in out and "Activations, newest first" in out
    rows = [
        [c.strip() for c in line.split("│")[1:-1]]
        for line in out.split("Activations, newest first")[1].splitlines()
        if line.startswith("│")
    ]
    assert [r[:6] for r in rows] == [
        ["5", rows[0][1], rows[0][2], "1", "2", "rollback of #4"],
        ["4", rows[1][1], rows[1][2], "2", "1", "activate, rolled back by #5"],
        ["3", rows[2][1], rows[2][2], "1", "2", "rollback of #2"],
        ["2", rows[3][1], rows[3][2], "2", "1", "apply, rolled back by #3"],
        ["1", rows[4][1], rows[4][2], "1", "-", "apply"],
    ]
    assert rows[2][6] == "too many blocks" and rows[4][6] == "review.rules"


def test_cli_activate_refuses_a_version_that_no_longer_compiles(two: tuple[Workspace, Path]) -> None:
    ws, files = two
    lists.create_list(ws, "bad_domains", "email_domain")
    (files / "list.rules").write_text("block if :email_domain: in @bad_domains\n")
    code, out = run(ws, "rules", "apply", str(files / "list.rules"), "--set", "tiny")
    assert code == 0, out
    run(ws, "rules", "activate", "2")
    with sqlite3.connect(ws.root / "rules.db") as con:
        con.execute("DELETE FROM lists WHERE name = 'bad_domains'")
    one_line_error(
        *run(ws, "rules", "activate", "3"), "Ruleset v3 no longer compiles on its feature set 'tiny'"
    )
    assert active_version(ws) == 2


def test_cli_backtest_against_a_version_or_a_file(two: tuple[Workspace, Path]) -> None:
    ws, files = two
    block = str(files / "block.rules")
    code, out = run(ws, "rules", "backtest", block, "--set", "tiny")
    assert code == 0 and changed(out) == ("active ruleset v2", 0), out  # v2 is this very text
    code, out = run(ws, "rules", "backtest", block, "--set", "tiny", "--against", "1")
    assert code == 0, out
    label, n = changed(out)
    assert label == "ruleset v1" and n > 0 and count(out, "good customers newly blocked") > 0
    assert count(out, "good customers unblocked") == 0
    expected = backtest(
        ws,
        rulesets.compile_text(ws, BLOCK, "tiny"),
        feature_set("tiny"),
        baseline=rulesets.baseline(ws, 1).ruleset,
        horizon=timedelta(days=2),
    )
    assert n == expected.change.changed
    review = str(files / "review.rules")
    code, out = run(ws, "rules", "backtest", block, "--set", "tiny", "--against", review)
    assert code == 0 and changed(out) == (f"file '{review}'", n), out  # v1's text, in a file
    code, out = run(ws, "rules", "backtest", block, "--set", "tiny", "--against", "v2")
    assert code == 0 and changed(out) == ("ruleset v2", 0), out

    code, out = run(ws, "rules", "backtest", "--rule", "block if :amount_usd: > 5", "--against", "1")
    one_line_error(
        code, out, "--against sets the baseline of a rules FILE; a --rule joins the active ruleset"
    )
    one_line_error(*run(ws, "rules", "backtest", block, "--against", "9"), "Ruleset version 9 does not exist")
    code, out = run(ws, "rules", "backtest", block, "--against", str(files / "gone.rules"))
    one_line_error(code, out, "which is neither (no such file)")
    (files / "bad.rules").write_text("block if :amount_usd: > 'x'\n")
    code, out = run(ws, "rules", "backtest", block, "--set", "tiny", "--against", str(files / "bad.rules"))
    one_line_error(code, out, f"{files / 'bad.rules'}: rule 'block_line_1' line 1")


def test_cli_backtest_against_a_version_runs_it_on_its_own_set(two: tuple[Workspace, Path]) -> None:
    ws, files = two
    mine = FeatureSet("mine", (Aggregate("card", "count", window=timedelta(hours=1), name="card.n_1h"),))
    path = set_path(ws.root, "mine")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(mine.to_json()))
    (files / "mine.rules").write_text("vel: block if :card.n_1h: > 1\n")
    args = ("rules", "backtest", str(files / "mine.rules"), "--set", "mine", "--against", "2")
    code, out = run(ws, *args)
    assert code == 0, out
    # the same velocity rule on both sets: only v2's review rule differs
    assert changed(out)[0] == "ruleset v2 (on its feature set 'tiny')"
    assert count(out, "good customers newly blocked") == 0 and count(out, "fraud no longer blocked") == 0
    rulesets.save(ws, "block if :risk_score: >= 80", set_name="tiny")  # v3, never active
    code, out = run(ws, "rules", "backtest", str(files / "block.rules"), "--set", "tiny", "--against", "3")
    one_line_error(code, out, "Ruleset v3 read :risk_score: or :risk_level:, but no scores were given")


def test_cli_help_of_the_new_commands_has_an_example(ws: Workspace) -> None:
    for command, example in (
        ("activate", "payfm rules activate 2 --note"),
        ("rollback", "payfm rules rollback --note"),
        ("history", "payfm rules history"),
        ("backtest", "--against 2"),
    ):
        code, out = run(ws, "rules", command, "--help")
        assert code == 0 and example in out, out


def test_cli_replaces_an_active_version_that_no_longer_compiles(two: tuple[Workspace, Path]) -> None:
    """The commands that replace the active version must work when it is broken (it is when they are
    needed): its change is counted against no ruleset, with a warning naming why."""
    ws, files = two
    lists.create_list(ws, "bad_domains", "email_domain")
    (files / "list.rules").write_text("block if :email_domain: in @bad_domains\n")
    code, out = run(ws, "rules", "apply", str(files / "list.rules"), "--set", "tiny")
    assert code == 0, out
    with sqlite3.connect(ws.root / "rules.db") as con:  # v3, active, loses its list
        con.execute("DELETE FROM lists WHERE name = 'bad_domains'")
    code, out = run(ws, "rules", "rollback", "--note", "escape")
    assert code == 0 and active_version(ws) == 2, out
    assert "warning: the active ruleset cannot be the baseline: Ruleset v3 no longer compiles" in out
    assert changed(out)[0] == "no ruleset (active v3 no longer compiles)"
    assert "Rolled back to ruleset v2" in out and "replacing v3." in out


def test_cli_warns_when_the_production_model_runs_on_another_feature_set(two: tuple[Workspace, Path]) -> None:
    """A ruleset on another feature set than the production model's is refused by a decision service (on
    reload, and at start): the command that activates it says so, and how to make them share one."""
    import numpy as np

    from payfm.features.catalog import bench_set
    from payfm.registry import Registry
    from payfm.training.models import model_class

    ws, _ = two
    fs = bench_set()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, len(fs.names)))
    y = (X[:, 0] > 1).astype(int)  # both labels in the training and the validation rows
    model = model_class("lr")(seed=0).fit(X[:300], y[:300], None, X[300:], y[300:], feature_names=fs.names)
    reg = Registry(ws)
    reg.promote(reg.register(model, name="fraud-lr", task="fraud", fset=fs).ref)  # type: ignore[arg-type]
    code, out = run(ws, "rules", "activate", "1")
    assert code == 0, out
    assert (
        "warning: the production model fraud-lr@1 runs on feature set 'bench15', and ruleset v1 on 'tiny'"
        in out
    )
    assert "Activate a version on 'bench15'" in out and "makes it serve v1" not in out


def test_a_set_cannot_drop_a_feature_the_active_ruleset_reads(ws: Workspace, tmp_path: Path) -> None:
    hourly = Aggregate("card", "count", window=timedelta(hours=1), name="card.n_1h")
    daily = Aggregate("card", "count", window=timedelta(days=1), name="card.n_1d")

    def define(*features: Aggregate) -> tuple[int, str]:
        f = tmp_path / "mine.json"
        f.write_text(json.dumps(FeatureSet("mine", features).to_json()))
        r = CliRunner().invoke(cli, ["-w", str(ws.root), "features", "define", str(f), "--replace"])
        return r.exit_code, r.output

    assert define(hourly, daily)[0] == 0
    rulesets.save(ws, "block if :card.n_1h: > 3", activate=True, set_name="mine")
    code, out = define(daily)  # without card.n_1h: the active ruleset could not load any more
    assert code == 1 and "Feature set 'mine' cannot drop card.n_1h: the active ruleset v1 reads them" in out
    assert "card.n_1h" in json.loads(set_path(ws.root, "mine").read_text())["features"][0].values()
    assert define(hourly)[0] == 0  # dropping a feature it does not read is fine


def test_a_list_is_deleted_only_when_the_active_ruleset_does_not_read_it(ws: Workspace) -> None:
    lists.create_list(ws, "bad_domains", "email_domain", author="ana")
    lists.add_values(ws, "bad_domains", ["spam.example", "junk.example"], author="ana")
    applied(ws, "block if :email_domain: in @bad_domains", "block if :amount_usd: > 900")
    rulesets.activate(ws, 1)
    r = CliRunner().invoke(cli, ["-w", str(ws.root), "lists", "delete", "bad_domains"])
    assert r.exit_code == 1 and "is read by the active ruleset v1" in r.output, r.output
    assert lists.list_values(ws, "bad_domains") == ["junk.example", "spam.example"]  # untouched
    rulesets.activate(ws, 2)
    r = CliRunner().invoke(cli, ["-w", str(ws.root), "lists", "delete", "bad_domains"])
    assert r.exit_code == 0 and "Deleted list 'bad_domains' (2 values)." in r.output, r.output
    assert [e.action for e in lists.audit(ws, "bad_domains")] == ["create", "add", "add", "delete"]
    with pytest.raises(RuleError, match="Unknown list"):
        lists.list_values(ws, "bad_domains")
    with pytest.raises(RuleError, match=re.escape("Ruleset v1 no longer compiles")):  # names the version
        rulesets.activate(ws, 1)


def test_cli_switches_without_a_backtest_when_asked(two: tuple[Workspace, Path]) -> None:
    ws, _ = two

    def invoke(*args: str) -> tuple[int, str]:
        r = CliRunner(env={"COLUMNS": "250"}).invoke(cli, ["-w", str(ws.root), "rules", *args])
        return r.exit_code, r.output

    code, out = invoke("activate", "1", "--no-backtest", "--note", "incident")
    assert code == 0 and "Change against" not in out and "Activated ruleset v1" in out, out
    assert "replacing v2." in out and rulesets.activations(ws)[0].note == "incident"
    code, out = invoke("rollback", "--no-backtest")
    assert code == 0 and "Change against" not in out and active_version(ws) == 2, out
    code, out = invoke("activate", "1", "--no-backtest", "--from", "2026-01-02")
    one_line_error(code, out, "--no-backtest takes no backtest window. Got --from.")


def test_a_list_deleted_while_a_version_reading_it_is_activated_refuses_the_switch(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    lists.create_list(ws, "bad_domains", "email_domain")
    applied(ws, "block if :email_domain: in @bad_domains", "block if :amount_usd: > 900")
    # the race: the version compiled (activatable), then `lists delete` committed before the switch
    monkeypatch.setattr(rulesets, "activatable", lambda ws, version, allow_empty=False: None)
    lists.delete_list(ws, "bad_domains")
    with pytest.raises(
        RuleError, match=re.escape("Ruleset v1 reads the list @bad_domains, deleted meanwhile")
    ):
        rulesets.activate(ws, 1)
    assert active_version(ws) == 2 and len(rulesets.activations(ws)) == 2


def test_a_set_may_drop_a_feature_named_like_a_charge_field_the_ruleset_reads_as_the_field(
    ws: Workspace, tmp_path: Path
) -> None:
    from payfm.features.catalog import tiny_set

    assert "amount_usd" in tiny_set().names  # a feature named as the charge field
    f = tmp_path / "mine.json"

    def define(fs: FeatureSet) -> tuple[int, str]:
        f.write_text(json.dumps(fs.to_json()))
        r = CliRunner().invoke(cli, ["-w", str(ws.root), "features", "define", str(f), "--replace"])
        return r.exit_code, r.output

    tiny = tiny_set()
    assert define(FeatureSet("mine", tiny.features))[0] == 0
    rulesets.save(ws, "block if :amount_usd: > 5000", activate=True, set_name="mine")
    kept = tuple(x for x in tiny.features if x.name != "amount_usd")
    code, out = define(FeatureSet("mine", kept))
    assert code == 0, out  # the rule reads the charge's amount_usd, which no set defines


def test_cli_says_a_restart_is_needed_without_a_model_when_the_set_changes(
    two: tuple[Workspace, Path],
) -> None:
    ws, _ = two  # v1, v2 on tiny; no model
    rulesets.save(ws, "block if :amount_usd: > 900", set_name="default")
    r = CliRunner(env={"COLUMNS": "250"}).invoke(
        cli, ["-w", str(ws.root), "rules", "activate", "3", "--no-backtest"]
    )
    assert r.exit_code == 0, r.output
    assert (
        "the version it replaced on 'tiny'" in r.output and "restart it to serve the new version" in r.output
    )
    assert "makes it serve v3" not in r.output
