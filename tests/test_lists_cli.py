"""`payfm lists`: what a fraud analyst's audit found missing: a listing of the lists, values from a file,
removals that name what was not there, a bounded `show`, and names that differ only in case."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.events.workspace import Workspace
from payfm.rules import rulesets
from payfm.rules.limits import RuleError
from payfm.rules.lists import all_lists, create_list, remove_values_reporting


@pytest.fixture()
def ws(tmp_path: Path) -> Workspace:
    return Workspace.open(tmp_path / "ws", create=True)


def run(ws: Workspace, *args: str, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["-w", str(ws.root), *args], input=stdin)
    return result.exit_code, " ".join(result.output.split())


def test_lists_list_shows_each_list_its_size_and_whether_the_active_ruleset_reads_it(ws: Workspace) -> None:
    assert run(ws, "lists", "list") == (0, "No lists yet: payfm lists create NAME --type TYPE.")
    run(ws, "lists", "create", "bad_bins", "--type", "bin")
    run(ws, "lists", "create", "vip", "--type", "email_domain")
    run(ws, "lists", "add", "bad_bins", "411111", "550000")
    rulesets.save(ws, "b: block if :card_bin: in @bad_bins\n", activate=True, set_name="tiny", author="ana")
    code, out = run(ws, "lists", "list")
    assert code == 0
    assert re.search(r"│ bad_bins │ bin │ 2 │ [0-9T:-]+ │ \S+ │ yes \(v1\) │", out), out
    assert re.search(r"│ vip │ email_domain │ 0 │ [0-9T:-]+ │ \S+ │ no │", out), out
    assert [(v.name, v.size) for v in all_lists(ws)] == [("bad_bins", 2), ("vip", 0)]


def test_values_come_from_a_file_or_stdin_and_a_removal_names_what_was_not_there(
    ws: Workspace, tmp_path: Path
) -> None:
    run(ws, "lists", "create", "trusted", "--type", "email_domain")
    f = tmp_path / "domains.txt"
    f.write_text("# exported from the CRM\nshop.example\n\n  Gmail.com  \n")
    assert run(ws, "lists", "add", "trusted", "vip.example", "--file", str(f)) == (
        0,
        "Added 3 new values to 'trusted'.",
    )
    assert run(ws, "lists", "add", "trusted", "--file", "-", stdin="later.example\n")[0] == 0
    code, out = run(ws, "lists", "remove", "trusted", "gmail.com", "gmial.com", "NOPE.example")
    assert code == 0 and "Removed 1 value from 'trusted'." in out
    assert "warning: not on 'trusted', so not removed: 'gmial.com', 'nope.example'." in out
    assert remove_values_reporting(ws, "trusted", ["SHOP.example", "x.example"]) == (1, ["x.example"])
    code, out = run(ws, "lists", "add", "trusted")
    assert code == 2 and "Give VALUES, or --file with one value per line." in out
    code, out = run(ws, "lists", "add", "trusted", "--file", str(tmp_path / "none.txt"))
    assert code != 0 and "Traceback" not in out and "none.txt" in out


def test_show_stops_at_its_limit_and_says_how_many_more(ws: Workspace) -> None:
    run(ws, "lists", "create", "ips", "--type", "ip_address")
    run(ws, "lists", "add", "ips", *(f"203.0.113.{i}" for i in range(1, 13)))
    code, out = run(ws, "lists", "show", "ips", "--limit", "5")
    assert code == 0 and "List 'ips' (ip_address, 12 values)" in out
    assert out.count("203.0.113.") == 5 and "... and 7 more (--limit 0 shows all)." in out
    assert run(ws, "lists", "show", "ips", "--limit", "0")[1].count("203.0.113.") == 12


def test_names_differing_only_in_case_are_refused_and_suggested(ws: Workspace, tmp_path: Path) -> None:
    create_list(ws, "bad_bins", "bin", author="ana")
    with pytest.raises(
        RuleError,
        match=re.escape("by more than case. Got 'Bad_Bins'; list 'bad_bins' exists"),
    ):
        create_list(ws, "Bad_Bins", "bin", author="ana")
    code, out = run(ws, "lists", "show", "BAD_BINS")
    assert code == 1 and "Unknown list 'BAD_BINS'. Did you mean 'bad_bins'?" in out
    code, out = run(ws, "lists", "show", "vip_cards")  # nothing close: the lists there are
    assert (
        code == 1 and "Unknown list 'vip_cards'. The workspace's lists: 'bad_bins' (payfm lists list)." in out
    )
    rules = tmp_path / "r.rules"
    rules.write_text("x: block if :card_bin: in @BAD_BINS\n")
    code, out = run(ws, "rules", "check", str(rules), "--set", "tiny")
    assert code == 1 and "Unknown list '@BAD_BINS'. Did you mean '@bad_bins'?" in out


def test_an_added_value_no_charge_holds_is_warned_of(ws: Workspace) -> None:
    """An id copied cut short ('fp_e46ff8…' from a narrow table) was added without a word and never matched
    (an analyst's audit): values no charge of the log holds are named in a warning; the add stands."""
    from payfm.synth import WorldConfig, generate_world

    ws.write_stream(generate_world(WorldConfig(charges=2_000, days=3, seed=2)), "replace")
    fps = ws.read("charges")["card_fingerprint"].to_pylist()
    ips = [ip for ip in ws.read("charges")["ip_address"].to_pylist() if ip]
    run(ws, "lists", "create", "bad_cards", "--type", "card_fingerprint")
    code, out = run(ws, "lists", "add", "bad_cards", fps[0], fps[1][:10])
    assert code == 0 and "Added 2 new values to 'bad_cards'." in out
    assert (
        "warning: 1 value of 'bad_cards' no charge of the event log holds as card_fingerprint: "
        f"{fps[1][:10]}." in out
    )
    assert fps[0] + "," not in out and fps[0] + "." not in out  # a value the log holds is not named
    run(ws, "lists", "create", "bad_ips", "--type", "ip_address")
    code, out = run(ws, "lists", "add", "bad_ips", ips[0], *(f"198.51.100.{i}" for i in range(7)))
    assert code == 0 and "7 values of 'bad_ips' no charge of the event log holds as ip_address" in out
    assert "198.51.100.4 and 2 more." in out
    code, out = run(ws, "lists", "add", "bad_ips", ips[1])
    assert code == 0 and "warning" not in out
    run(ws, "lists", "create", "bad_countries", "--type", "country")
    assert "warning" not in run(ws, "lists", "add", "bad_countries", "KP")[1]  # three fields hold countries


def test_an_empty_log_warns_of_nothing(ws: Workspace) -> None:
    run(ws, "lists", "create", "bad_ips", "--type", "ip_address")
    assert run(ws, "lists", "add", "bad_ips", "203.0.113.7") == (0, "Added 1 new value to 'bad_ips'.")


def test_add_says_what_it_did_not_add_and_a_file_error_names_its_line(ws: Workspace, tmp_path: Path) -> None:
    """An analyst's audit: 'Added 3 new values' for four given, one folded into another without a word; a
    file's bad value named as 'value 2 of 3' (it was line 3); a '# comment' after a value refused."""
    run(ws, "lists", "create", "disposable", "--type", "email_domain")
    run(ws, "lists", "add", "disposable", "tutanota.com")
    code, out = run(
        ws,
        "lists",
        "add",
        "disposable",
        "guerrillamail.com",
        "mailinator.com",
        "tutanota.com",
        "Mailinator.com",
    )
    assert code == 0 and "Added 2 new values to 'disposable'." in out
    assert "warning: 1 of the 4 values given repeat another of them once normalized" in out
    assert "warning: on 'disposable' already, so not added again: 'tutanota.com'." in out
    run(ws, "lists", "create", "ips", "--type", "ip_address")
    f = tmp_path / "ips.txt"
    f.write_text("# from the SOC\n1.2.3.4   # tor exit\n\n5.6.7.8\t# another\n")
    code, out = run(ws, "lists", "add", "ips", "--file", str(f))
    assert code == 0 and "Added 2 new values to 'ips'." in out, out
    f.write_text("1.2.3.9\n# x\n5.6.7.999\n")
    code, out = run(ws, "lists", "add", "ips", "9.9.9.9", "--file", str(f))
    assert code == 1 and f"List 'ips', line 3 of '{f}': " in out and "5.6.7.999" in out, out
    code, out = run(ws, "lists", "add", "ips", "9.9.9.9", "nope")
    assert code == 1 and "List 'ips', value 2 of the command line: " in out, out
    assert all_lists(ws)[1].size == 2  # all or nothing: nothing of a refused add


def test_a_bin_entry_is_seen_as_rules_match_it_by_prefix(ws: Workspace) -> None:
    """A 6-digit entry matches every charge whose 8-digit BIN starts with it: not 'unseen'."""
    import pyarrow as pa

    from factories import charges

    rows = charges(2).to_pylist()
    rows[0]["card_bin"], rows[1]["card_bin"] = "40624912", "51000000"
    with ws.writer() as w:
        w.write("charges", pa.Table.from_pylist(rows, schema=charges(2).schema))
    run(ws, "lists", "create", "bins", "--type", "bin")
    code, out = run(ws, "lists", "add", "bins", "406249", "40624912", "406250")
    assert (
        code == 0
        and "warning: 1 value of 'bins' no charge of the event log holds as card_bin: 406250." in out
    )


def test_a_values_file_without_a_value_is_refused_naming_it(ws: Workspace, tmp_path: Path) -> None:
    run(ws, "lists", "create", "bad_bins", "--type", "bin")
    f = tmp_path / "empty.txt"
    f.write_text("# nothing yet\n\n")
    code, out = run(ws, "lists", "add", "bad_bins", "--file", str(f))
    assert code == 1 and out == (
        f"Error: --file: expected one value per line; '{f}' holds none (only blank lines and # comments)."
    )
    assert run(ws, "lists", "add", "bad_bins")[0] == 2  # neither: a usage error, as before
