"""User-facing messages a docs audit found wanting: an import whose mapping names a column the file lacks
reports it together with the card numbers found (one round to fix the file, still refused, no number shown);
a YAML syntax error in a mapping is one line naming the file, line and column; every rule error of a rules
FILE names the file; `lists show` prints its title whole, above the table. (`payfm sql`'s refusal of a file
read by its path: tests/test_query.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.errors import ConfigError
from payfm.events.import_problems import MissingColumns
from payfm.events.mapping import load_mapping
from payfm.events.validate import ValidationError
from payfm.events.workspace import Workspace
from payfm.rules import lists
from test_import import MC, ROWS, VISA, changed, failed_import, write_csv, write_mapping

CARD_LINE = (
    "row 3 (line 4), column 'note': expected no card numbers (only a column sent through transform: "
    "fingerprint, read only through a keyed `hash`, or listed under no_card_numbers, may hold them); "
    "received a full card number (not shown)"
)


def _run(ws: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["-w", str(ws), *args])
    return result.exit_code, result.output


# ---- 1. a column the file lacks and a card number: one run reports both ------------------------------------
def _merchant_file(tmp_path: Path) -> Path:
    """ROWS with the merchant column named 'merchant', and a card number in an unmapped column."""
    rows = {("merchant" if k == "shop" else k): v for k, v in ROWS.items()}
    return write_csv(tmp_path, {**rows, "note": ["ok", "ok", f"paid with {MC}", "ok"]})


def test_a_missing_column_and_a_card_number_are_reported_in_one_run(tmp_path: Path) -> None:
    path = _merchant_file(tmp_path)
    mapping = write_mapping(tmp_path, changed(merchant_id="merchnt"))
    text = failed_import(tmp_path, path, mapping, MissingColumns)
    lines = text.splitlines()
    assert lines[0] == (
        f"m.yaml: 'columns.merchant_id': expected a column of '{path}' (did you mean 'merchant'?); "
        "received 'merchnt', which the file does not have."
    )
    assert lines[1].startswith("(card numbers found below may be in a column the mapping means to hash")
    assert lines[2] == f"{path}: 1 problem(s); nothing was written."
    assert lines[3] == f"  {path}: {CARD_LINE}"
    assert len(lines) == 4 and MC not in text and "5555" not in text


def test_the_combined_error_is_both_a_mapping_and_a_data_error(tmp_path: Path) -> None:
    mapping = write_mapping(tmp_path, changed(merchant_id="merchnt"))
    ws = Workspace.open(tmp_path / "ws", create=True)
    from payfm.events.importer import import_file

    with pytest.raises(ConfigError) as config:
        import_file(ws, _merchant_file(tmp_path), mapping)
    with pytest.raises(ValidationError) as data:
        import_file(ws, _merchant_file(tmp_path), mapping)
    assert isinstance(config.value, ValidationError) and data.value.total == 1
    assert "did you mean 'merchant'?" in str(data.value)


def test_every_missing_column_is_reported_the_first_five_and_the_count(tmp_path: Path) -> None:
    m = changed(
        merchant_id="merchnt",
        charge_id={"column": "idd"},
        channel={"column": "knd", "map": {"web": "ecommerce"}, "default": "card_present"},
    )
    text = failed_import(tmp_path, _merchant_file(tmp_path), write_mapping(tmp_path, m), MissingColumns)
    missing = [line for line in text.splitlines() if line.startswith("m.yaml: ")]
    assert sorted(line.split("'")[1] for line in missing) == [
        "columns.channel",
        "columns.charge_id",
        "columns.merchant_id",
    ]
    assert all(f"received '{c}'" in text for c in ("idd", "knd", "merchnt")) and CARD_LINE in text

    many = changed(**{f: {"column": f"{f}_x"} for f in ("charge_id", "merchant_id", "currency")})
    many["columns"]["amount"] = {"column": "amt", "minor_units": {"column": "cur_x"}}
    many["columns"]["amount_usd"] = {"column": "amt", "usd_cents": {"column": "cur_x"}}
    many["columns"]["channel"] = {"column": "kind_x", "map": {"web": "ecommerce"}, "default": "card_present"}
    text = failed_import(tmp_path / "2", write_csv(tmp_path), write_mapping(tmp_path, many), ConfigError)
    lines = text.splitlines()  # no card number: a mapping mistake alone, a ConfigError
    assert len(lines) == 6 and all(line.startswith("m.yaml: 'columns.") for line in lines[:5])
    assert lines[5] == "... and 1 more column the file does not have"


def test_the_cli_prints_the_mapping_lines_then_the_card_numbers_never_a_number(tmp_path: Path) -> None:
    path = _merchant_file(tmp_path)
    code, out = _run(
        tmp_path / "ws",
        "import",
        str(path),
        "--mapping",
        str(write_mapping(tmp_path, changed(merchant_id="merchnt"))),
    )
    assert code == 1 and MC not in out and "Traceback" not in out
    assert out.startswith("Error: m.yaml: 'columns.merchant_id': expected a column of")
    assert "(did you mean 'merchant'?)" in out and CARD_LINE in out


# ---- 2. a YAML syntax error in a mapping: one line, file, line and column, no text of the file -------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            f"table: charges\ndescription: paid {VISA} s3cret\ncolumns: {{a: \n",
            "m5.yaml: expected valid YAML; received a syntax error at line 4, column 1: expected the node "
            "content, but found '<stream end>' (while parsing a flow node).",
        ),
        (
            f"table: charges  # {VISA} s3cret\ncolumns: {{a: [b\n",
            "m5.yaml: expected valid YAML; received a syntax error at line 3, column 1: expected ',' or ']', "
            "but got '<stream end>' (while parsing a flow sequence at line 2, column 14).",
        ),
        (
            f"table: charges\ndescription: *{VISA}\n",
            "m5.yaml: expected valid YAML; received a syntax error at line 2, column 14: found undefined "
            "alias '[card number removed]'.",
        ),
        (
            "table: charges\ndescription: s3cret\x00\n",
            "m5.yaml: expected valid YAML; received a syntax error at line 2, column 20: unacceptable "
            "character #x0000 (special characters are not allowed).",
        ),
    ],
)
def test_a_yaml_syntax_error_is_one_line_naming_file_line_and_column(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "m5.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_mapping(path)
    assert str(e.value) == expected
    assert "\n" not in str(e.value) and VISA not in str(e.value) and "s3cret" not in str(e.value)
    code, out = _run(tmp_path / "ws", "import", str(write_csv(tmp_path)), "--mapping", str(path))
    assert (code, out) == (1, f"Error: {expected}\n")


def test_a_mapping_that_is_not_utf8_is_one_line_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"table: charges\ndescription: caf\xe9\n")
    with pytest.raises(
        ConfigError, match=r"^latin\.yaml: expected UTF-8 text; received the byte 0xe9 on line 2,"
    ):
        load_mapping(path)


# ---- 3. every rule error of a rules FILE names the file ----------------------------------------------------
SYNTAX = (
    "line 1, column 24: The rule ended early. Expected '(', '-', a 'string', a number, an attribute like "
    ":amount_usd:, true or false."
)
TYPE = (
    "rule 'big' line 2, column 15: '>' compares values of one type. Got a number (:amount_usd:) and a string "
    "('x')."
)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("block if :amount_usd: >\n", SYNTAX),
        ("ok: review if :amount_usd: > 5\nbig: block if :amount_usd: > 'x'\n", TYPE),
    ],
)
@pytest.mark.parametrize("command", [("check",), ("backtest",), ("apply", "--note", "n")])
def test_a_rule_error_of_a_file_names_the_file(
    tmp_path: Path, text: str, error: str, command: tuple[str, ...]
) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    f = tmp_path / "bad.rules"
    f.write_text(text)
    code, out = _run(ws.root, "rules", command[0], str(f), *command[1:], "--set", "tiny")
    assert (code, out) == (1, f"Error: {f}: {error}\n")


def test_a_rule_argument_has_no_file_to_name(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    code, out = _run(ws.root, "rules", "backtest", "--rule", "block if :amount_usd: >", "--set", "tiny")
    assert (code, out) == (1, f"Error: {SYNTAX}\n")


# ---- 5. `lists show`: the title whole, on its own line -----------------------------------------------------
def test_lists_show_prints_its_title_whole_above_the_values(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    lists.create_list(ws, "trusted_domains", "email_domain")
    lists.add_values(ws, "trusted_domains", ["good.com"])
    code, out = _run(ws.root, "lists", "show", "trusted_domains")
    lines = out.splitlines()
    assert code == 0 and lines[0] == "List 'trusted_domains' (email_domain, 1 value)"
    assert [line.strip("│ ") for line in lines if "good.com" in line] == ["good.com"] and "values" not in out
    lists.add_values(ws, "trusted_domains", ["b.com"])
    lines = _run(ws.root, "lists", "show", "trusted_domains")[1].splitlines()
    assert lines[0] == "List 'trusted_domains' (email_domain, 2 values)" and lines[1].startswith("┏")
    assert sum("trusted" in line for line in lines) == 1  # (not wrapped into the column as a title)


# ---- ids padded by a fixed-width export ------------------------------------------------------------------
def test_padded_ids_are_refused_unless_the_field_strips_them(tmp_path: Path) -> None:
    """An id refuses whitespace at either end (docs/events.md); `strip: true` on the mapping's field removes
    it first, for the column it reads (and before a prefix)."""
    from payfm.errors import ConfigError
    from payfm.events.importer import import_file
    from test_import import ROWS, changed, failed_import, write_csv, write_mapping, ws_at

    rows = {**ROWS, "shop": ["s1   ", "  s2", "s1", "s3 "], "id": [" t1", "t2", "t3 ", "t4"]}
    path = write_csv(tmp_path, rows)
    text = failed_import(tmp_path, path, write_mapping(tmp_path))
    assert "column 'shop' (merchant_id): expected an id without whitespace at its start or end" in text
    stripping = changed(
        merchant_id={"column": "shop", "strip": True},
        charge_id={"column": "id", "prefix": "ch_", "strip": True},
    )
    ws = ws_at(tmp_path / "ok")
    import_file(ws, path, write_mapping(tmp_path, stripping, "strip.yaml"))
    charges = ws.read("charges", ["charge_id", "merchant_id"]).to_pylist()
    assert [c["merchant_id"] for c in charges] == ["s1", "s2", "s1", "s3"]
    assert [c["charge_id"] for c in charges] == ["ch_t1", "ch_t2", "ch_t3", "ch_t4"]
    for bad, said in (("yes", "'columns.merchant_id.strip': expected true or false"),):
        m = changed(merchant_id={"column": "shop", "strip": bad})
        with pytest.raises(ConfigError, match=said):
            import_file(ws_at(tmp_path / "bad"), path, write_mapping(tmp_path, m, "bad.yaml"))
