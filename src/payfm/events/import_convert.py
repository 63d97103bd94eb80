"""Source columns to typed values: text, keyed hashes, card fields, integers and amounts.

The conversions of :mod:`payfm.events.importer`'s "mapping columns" step for string and integer target
fields (times are :mod:`payfm.events.import_times`): renames, constants, keyed hashes, value maps, card
transforms (bin, last4, brand, fingerprint), numbers written with a decimal comma or a thousands separator
(``1.234,50``), scales, minor units and USD cents, vectorized with Arrow and numpy. A cell that cannot be
converted is recorded in :class:`~payfm.events.import_problems.Problems` (by row, a card number never
shown) and left null; a column that cannot be read at all returns None.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from payfm.events import currency
from payfm.events.card_transforms import fingerprint, truncated
from payfm.events.cards import BRAND_PREFIXES, ascii_digits, shown_text
from payfm.events.import_personal import check_personal
from payfm.events.import_problems import KEEP, Problems, values_at
from payfm.events.import_text import EXPECTED, convert
from payfm.events.mapping import CurrencySource, FieldSpec
from payfm.events.schema import RULES
from payfm.events.validate import blank_rows, shown_number, shown_value, try_cast

# A decimal number written as text (also how :mod:`payfm.events.import_outcomes` reads numeric labels).
NUMBER = r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"

# Card brands by leading digits of the number (first match wins; checked in this order).
_BRANDS = BRAND_PREFIXES


# A binary column's cells are read as UTF-8 text (a Parquet BYTE_ARRAY column written without its UTF8
# annotation); cells that are not UTF-8 are a problem of their rows, keyed so that each is said once however
# many fields, filters or labels read it.
NOT_UTF8 = "UTF-8 text (the bytes of a binary column are read as UTF-8)"


def as_text(
    col: pa.Array, out: Problems | None = None, column: str | None = None, where: str | None = None
) -> pa.Array:
    r"""``col`` as text (a cast unless it is text already). Cells of a binary column that are not UTF-8 (a
    Parquet file written in Latin-1) are reported as problems of ``column``'s rows in ``out`` (``where``: how
    the message names it) and null; without ``out`` and ``column`` the cast's ArrowInvalid is raised, for the
    caller to word. (:func:`text_of` also returns the rows.)

    >>> out = Problems()
    >>> as_text(pa.array([b"Caf\xe9", b"Shop"]), out, "shop").to_pylist()
    [None, 'Shop']
    >>> problem = out.items[0]
    >>> problem.row, problem.column, problem.received[:43]
    (1, 'shop', 'the byte 0xe9 at byte 4, which is not UTF-8')
    """
    return text_of(col, out, column, where)[0]


def text_of(
    col: pa.Array, out: Problems | None, column: str | None, where: str | None = None
) -> tuple[pa.Array, np.ndarray]:
    """:func:`as_text` of ``col``, and the 0-based rows it reported as not UTF-8 (null in the text)."""
    none = np.zeros(0, dtype=np.int64)
    if pa.types.is_string(col.type):
        return col, none
    try:
        return pc.cast(col, pa.string()), none
    except pa.ArrowInvalid:
        if out is None or column is None:
            raise
        bad, said = _not_utf8(col)
        if not len(bad):
            raise
    out.rows(column, bad, NOT_UTF8, said, key=NOT_UTF8, where=where)
    mask = np.zeros(len(col), dtype=bool)
    mask[bad] = True
    values = col.dictionary_decode() if pa.types.is_dictionary(col.type) else col
    if pa.types.is_fixed_size_binary(values.type):  # (which holds no empty value)
        values = pc.cast(values, pa.binary())
    # (emptied before the cast, not only nulled: a null's bytes stay in the buffer, which text kernels read)
    emptied = pc.cast(pc.if_else(pa.array(mask), pa.scalar(b"", values.type), values), pa.string())
    return pc.if_else(pa.array(mask), pa.scalar(None, pa.string()), emptied), bad


def _not_utf8(col: pa.Array) -> tuple[np.ndarray, list[str]]:
    """The rows of a binary ``col`` that are not UTF-8, and what a problem says of the first ones: the first
    byte that is not and where, never the bytes around it (they may hold a card number). Read row by row:
    only a column whose cast failed comes here."""
    rows: list[int] = []
    said: list[str] = []
    for i, value in enumerate(col.to_pylist()):
        if not isinstance(value, bytes):
            continue
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as e:
            rows.append(i)
            if len(said) < KEEP:
                said.append(
                    f"the byte 0x{value[e.start]:02x} at byte {e.start + 1}, which is not UTF-8 (the "
                    "column seems to be in another encoding, such as Windows-1252 or Latin-1: write it as "
                    "UTF-8 text)"
                )
    return np.array(rows, dtype=np.int64), said


def source_values(spec: FieldSpec, table: pa.Table, out: Problems | None = None) -> pa.Array:
    """The source values of ``spec``: one column, or several joined as text (an empty part joins as an
    empty text, `Authorised|` of a type and an empty reason; all of them empty is a missing value). A part
    that is not UTF-8 is reported in ``out`` (:func:`as_text`), and its row's value is missing (not the
    other parts alone, which would be reported again as a value of the wrong form)."""
    if spec.kind == "columns":
        read = [text_of(table.column(c).chunk(0), out, c) for c in spec.columns]
        parts = [text for text, _bad in read]
        joined = pc.binary_join_element_wise(
            *parts, spec.separator, null_handling="replace", null_replacement=""
        )
        none = functools.reduce(pc.and_, [pc.is_null(p) for p in parts]).to_numpy(zero_copy_only=False)
        for _text, bad in read:
            none[bad] = True
        return pc.if_else(pa.array(none), pa.scalar(None, joined.type), joined)
    col: pa.Array = table.column(spec.column).chunk(0)
    return col


def keyed_hash(parts: list[pa.Array], secret: bytes) -> pa.Array:
    """24 hex characters of SHA-256 over the secret and the parts' text, row by row (vectorized in DuckDB).

    Keyed with the workspace secret, so an id hashed from an account number cannot be reversed by trying
    every account number; nulls hash differently from empty texts.
    """
    n = len(parts[0])
    data = pa.table({**{f"c{i}": as_text(p) for i, p in enumerate(parts)}, "row_": pa.array(np.arange(n))})
    inputs = ", ".join(f"coalesce(c{i}, chr(0))" for i in range(len(parts)))
    con = duckdb.connect()
    try:
        con.register("data", data)
        query = (
            f"SELECT substr(sha256('{secret.hex()}' || chr(31) || concat_ws(chr(31), {inputs})), 1, 24) AS h "
        )
        result = con.sql(query + "FROM data ORDER BY row_").to_arrow_table()
    finally:
        con.close()
    hashed: pa.Array = result.column("h").combine_chunks().cast(pa.string())
    return hashed


def _card_digits(col: pa.Array, spec: FieldSpec, out: Problems) -> pa.Array | None:
    """Card numbers as plain digit texts (spaces and dashes removed); bad values are reported, never shown."""
    if pa.types.is_floating(col.type):
        if out is not None:
            out.column(
                spec.column,
                "card numbers as text or integers",
                f"floating-point numbers ({col.type}), which lose digits",
            )
        return None
    text = as_text(col, out, spec.column)
    other = np.flatnonzero(~pc.fill_null(pc.string_is_ascii(text), True).to_numpy(False))
    if len(other):  # digits of another script (fullwidth, Arabic-Indic) as ASCII ones: the same card
        values = text.to_pylist()
        for i in other:
            values[i] = ascii_digits(values[i])
        text = pa.array(values, type=pa.string())
    digits = pc.replace_substring_regex(text, r"[ -]", "")
    ok = pc.fill_null(pc.match_substring_regex(digits, r"^\d{8,19}$"), False)
    bad = np.flatnonzero(pc.and_(pc.is_valid(digits), pc.invert(ok)).to_numpy(False))
    if len(bad):
        if out is not None:
            out.rows(spec.column, bad, "a card number of 8-19 digits", "another value (not shown)")
        digits = pc.if_else(ok, digits, pa.scalar(None, pa.string()))
    return digits


# A masked card number as processors' reports write it: its first digits (a BIN, or fewer), a run of mask
# characters, its last four (424242******4242, 4242 XXXX XXXX 4242, ************4242, 411111...1111).
_MASKED = r"^\s*([0-9]{0,8})[ -]*[*xX#•.][*xX#•. -]*([0-9]{4})\s*$"


def _masked_digits(spec: FieldSpec, table: pa.Table, out: Problems) -> pa.Array:
    """The digits a masked card number shows, first ones and last four joined by a mask character that
    ``bin``, ``last4`` and ``brand`` read around; a value of another shape is a problem (never shown)."""
    text = as_text(source_values(spec, table, out), out, spec.source)
    ok = pc.fill_null(pc.match_substring_regex(text, _MASKED), False)
    bad = np.flatnonzero(pc.and_(pc.is_valid(text), pc.invert(ok)).to_numpy(False))
    if len(bad):
        out.rows(
            spec.column, bad, "a masked card number such as 424242******4242", "another value (not shown)"
        )
    shown = pc.replace_substring_regex(text, _MASKED, r"\1*\2")
    return pc.if_else(ok, shown, pa.scalar(None, pa.string()))


def _masked_transform(spec: FieldSpec, table: pa.Table, out: Problems) -> pa.Array:
    """bin (6 to 8 digits shown, else null), last4 or brand of masked card numbers."""
    parts = pc.extract_regex(_masked_digits(spec, table, out), r"^(?P<lead>[0-9]*)\*(?P<tail>[0-9]{4})$")
    leading, tail = pc.struct_field(parts, [0]), pc.struct_field(parts, [1])
    if spec.transform == "last4":
        return tail
    if spec.transform == "bin":
        return pc.if_else(pc.greater_equal(pc.utf8_length(leading), 6), leading, pa.scalar(None, pa.string()))
    return _brand_of(leading)


def _brand_of(digits: pa.Array) -> pa.Array:
    """The card brand of each number's leading digits (unknown when none matches; null for null)."""
    brand = np.full(len(digits), "unknown", dtype=object)
    taken = np.zeros(len(digits), dtype=bool)
    for name, pattern in _BRANDS:
        hit = pc.fill_null(pc.match_substring_regex(digits, pattern), False).to_numpy(False) & ~taken
        brand[hit] = name
        taken |= hit
    return pa.array(brand, type=pa.string(), mask=~pc.is_valid(digits).to_numpy(False))


def _card_transform(spec: FieldSpec, table: pa.Table, secret: bytes, out: Problems) -> pa.Array | None:
    # bin/last4/brand of the fingerprinted column report the same cells, which Problems shows once.
    if spec.masked:
        return _masked_transform(spec, table, out)
    digits = _card_digits(source_values(spec, table, out), spec, out)
    if digits is None:
        return None
    if spec.transform in ("bin", "last4"):  # (null where it would leave under 5 digits unknown)
        return truncated(digits, spec.transform)
    if spec.transform == "brand":
        return _brand_of(digits)
    # fingerprint: HMAC over the distinct cards only, then spread back to the rows.
    distinct = pc.drop_null(pc.unique(digits))
    fps = fingerprint(distinct, secret)
    taken_fp: pa.Array = pc.take(fps, pc.index_in(digits, value_set=distinct))
    return taken_fp


_CARD_PARTS = {"card_bin": "the first 6 to 8 digits", "card_last4": "4 digits", "card_brand": "a brand"}


def _mostly_masked(text: pa.Array) -> bool:
    """Whether most values of ``text`` are masked card numbers (a report's 424242******4242)."""
    valid = pc.sum(pc.is_valid(text)).as_py() or 0
    masked = pc.sum(pc.fill_null(pc.match_substring_regex(text, _MASKED), False)).as_py() or 0
    return valid > 0 and masked * 2 > valid


def to_strings(
    spec: FieldSpec, table: pa.Table, secret: bytes, out: Problems, required: bool
) -> pa.Array | None:
    n = table.num_rows
    name = spec.columns[0] if len(spec.columns) == 1 else "+".join(spec.columns)
    if spec.kind == "value":
        return pa.repeat(pa.scalar(spec.prefix + str(spec.value)), n)
    if spec.kind == "hash":
        # Blank inputs hash as missing ones (a Parquet '' like a CSV empty cell), and a row with nothing to
        # hash has no id: guests without an account number must not all share one hashed customer_id.
        parts = []
        for c in spec.columns:
            try:
                where = f"column '{shown_text(c)}' (hashed into {spec.target})"
                text = as_text(table.column(c).chunk(0), out, c, where)
                parts.append(_blank_as_null(_stripped(spec, text)))
            except (pa.ArrowNotImplementedError, pa.ArrowInvalid):  # a list, a struct
                out.column(
                    c, "values with a text form (for a keyed hash)", f"values of type {table.column(c).type}"
                )
                return None
        nothing = pc.is_null(parts[0])
        for part in parts[1:]:
            nothing = pc.and_(nothing, pc.is_null(part))
        result = pc.if_else(nothing, pa.scalar(None, pa.string()), keyed_hash(parts, secret))
    elif spec.transform is not None:
        return _card_transform(spec, table, secret, out)
    else:
        text = _stripped(spec, as_text(source_values(spec, table, out), out, spec.source))
        if spec.target in _CARD_PARTS and spec.map is None and _mostly_masked(text):
            out.column(
                name,
                f"{_CARD_PARTS[spec.target]} (the column holds masked card numbers such as 424242******4242: "
                f"`{spec.target}: {{column: {name}, transform: {spec.target.removeprefix('card_')}}}` reads "
                "them)",
                "masked card numbers (not shown)",
            )
            return None
        result = _blank_as_null(text)
        blank = blank_rows(text) if required and spec.missing is None else np.zeros(0, dtype=np.int64)
        if len(blank):  # (a CSV empty cell is null: validate_events reports it as such)
            out.rows(name, blank, "a value (required field)", "an empty text")
    if spec.convert == "email_domain":  # before map: the map is of domains, and no address is ever quoted
        result = _converted(spec, result, name, out)
    if spec.case == "lower":
        result = pc.utf8_lower(result)
    elif spec.case == "upper":
        result = pc.utf8_upper(result)
    if spec.map is not None:
        keys = pa.array(list(spec.map), type=pa.string())
        index = pc.index_in(result, value_set=keys)
        mapped = pc.take(pa.array(list(spec.map.values()), type=pa.string()), index)
        missing = pc.and_(pc.is_valid(result), pc.is_null(index))
        if spec.default is not None:
            mapped = pc.if_else(missing, spec.default, mapped)
        elif spec.keep_unmapped:
            mapped = pc.if_else(missing, result, mapped)
        else:
            bad = np.flatnonzero(missing.to_numpy(False))
            if len(bad):
                out.rows(
                    name,
                    bad,
                    f"one of the keys of '{spec.path}.map' (or give a default, or keep_unmapped: true)",
                    values_at(result, bad),
                )
        nulled = np.flatnonzero(pc.and_(pc.is_valid(index), pc.is_null(mapped)).to_numpy(False))
        if len(nulled) and required and spec.missing is None:  # (said here: not "an empty cell" later)
            said = [
                f"{v}, which '{spec.path}.map' sends to null (give `missing`)"
                for v in values_at(result, nulled)
            ]
            out.rows(name, nulled, "a value (required field)", said)
        result = mapped
    if spec.convert == "country":  # after map: a map names what the conversion does not know
        result = _converted(spec, result, name, out)
    if spec.prefix:
        result = pc.binary_join_element_wise(spec.prefix, result, "")
    if spec.missing is not None:  # an empty cell, a null, or a value mapped to null: this target value
        result = pc.fill_null(result, spec.missing)
    check_personal(spec, result, name, out)
    return result


def _converted(spec: FieldSpec, text: pa.Array, name: str, out: Problems) -> pa.Array:
    """``text`` through the field's ``convert``; values it cannot convert are problems (an e-mail address,
    personal data, is never quoted)."""
    assert spec.convert is not None
    result, bad = convert(spec.convert, text)
    if len(bad):
        said = values_at(text, bad) if spec.convert == "country" else "another text (not shown)"
        out.rows(name, bad, f"{EXPECTED[spec.convert]} ('{spec.path}.convert')", said)
    return result


def _stripped(spec: FieldSpec, text: pa.Array) -> pa.Array:
    """``text`` without whitespace at either end when the field says ``strip: true`` (ids padded by a
    fixed-width export: an id refuses them, docs/events.md)."""
    return pc.utf8_trim_whitespace(text) if spec.strip else text


def _blank_as_null(text: pa.Array) -> pa.Array:
    """Empty and blank texts as null, before case, map and prefix: a missing value stays missing
    (validate_events holds the same rule for the values it is handed)."""
    rows = blank_rows(text)
    if not len(rows):
        return text
    mask = np.zeros(len(text), dtype=bool)
    mask[rows] = True
    return pc.if_else(pa.array(mask), pa.scalar(None, pa.string()), text)


def plain_numbers(col: pa.Array, spec: FieldSpec, out: Problems) -> pa.Array:
    """Numbers written as text the way ``spec.numbers`` says (``1.234,50``: a decimal comma, dots between
    thousands) rewritten as Arrow reads them (``1234.50``), so that they convert exactly as a file written
    so would: thousands separators removed, the decimal separator made a point. A text that is no number
    written that way (``12.50`` where the decimal is a comma, ``1.23,4``) is reported, as the file has it
    (:func:`values_at`: no run of 13 or more digits shown), and null. Anything else (numbers of a Parquet
    file, text when the format is the plain one) is returned as it is.

    >>> from payfm.events.mapping import parse_mapping
    >>> m = parse_mapping({"table": "refunds", "csv": {"decimal": ",", "thousands": "."}, "columns": {
    ...     "refund_id": "id", "charge_id": "charge", "created": {"column": "ts", "unit": "s"},
    ...     "amount": {"column": "amt", "scale": 100}, "currency": {"value": "eur"},
    ...     "reason": {"value": "duplicate"}}}, "m.yaml")
    >>> out = Problems()
    >>> plain_numbers(pa.array(["1.234,50", "12", "-0,5", "12.50"]), m.fields["amount"], out).to_pylist()
    ['1234.50', '12', '-0.5', None]
    >>> problem = out.items[0]
    >>> problem.row, problem.received, problem.expected.startswith("a number with ',' as the decimal")
    (4, "'12.50'", True)
    """
    fmt = spec.numbers
    if fmt.plain or not pa.types.is_string(col.type):
        return col
    ok = pc.fill_null(pc.match_substring_regex(col, fmt.pattern), False)
    bad = np.flatnonzero(pc.and_(pc.is_valid(col), pc.invert(ok)).to_numpy(False))
    if len(bad):
        expected = f"a number with {fmt.described} (set by '{fmt.origin}'; e.g. {fmt.example})"
        # (keyed as to_floats' "a number": a cell that amount and amount_usd both read is said once)
        out.rows(spec.source, bad, expected, values_at(col, bad), key="a number")
        col = pc.if_else(ok, col, pa.scalar(None, pa.string()))
    thousands = fmt.thousands_pattern
    if thousands is not None:
        col = pc.replace_substring_regex(col, thousands, "")
    if fmt.decimal != ".":
        col = pc.replace_substring(col, fmt.decimal, ".")
    return col


# Numbers an export writes in another convention than the mapping's default: decimal commas ("6,70",
# "1.234,5": one or two decimals after the comma) or commas between thousands ("1,000", "12,500.50").
_HINTS = (
    (
        r"^\s*[+-]?(?:\d{1,3}(?:\.\d{3})+|\d+),\d{1,2}\s*$",
        ' (the file writes decimal commas: set the mapping\'s `csv: {decimal: ","}`)',
    ),
    (
        r"^\s*[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?\s*$",
        ' (the file writes commas between thousands: set the mapping\'s `csv: {thousands: ","}`)',
    ),
)


def to_floats(col: pa.Array, name: str, out: Problems) -> np.ndarray | None:
    """Numbers as float64 (NaN for null); text is parsed, and unparseable rows are reported (and NaN)."""
    if pa.types.is_string(col.type):
        ok = pc.fill_null(pc.match_substring_regex(col, NUMBER), False)
        bad = np.flatnonzero(pc.and_(pc.is_valid(col), pc.invert(ok)).to_numpy(False))
        if len(bad):
            left = bad
            for pattern, hint in _HINTS:  # each row with the hint its text calls for (docs/import.md)
                hinted = pc.fill_null(pc.match_substring_regex(col.take(pa.array(left)), pattern), False)
                mask = hinted.to_numpy(False)
                rows, left = left[mask], left[~mask]
                if len(rows):
                    out.rows(name, rows, "a number" + hint, values_at(col, rows), key="a number")
            if len(left):
                out.rows(name, left, "a number", values_at(col, left), key="a number")
            col = pc.if_else(ok, col, pa.scalar(None, pa.string()))
        col = pc.cast(pc.utf8_trim_whitespace(col), pa.float64())
    elif pa.types.is_decimal(col.type) or pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        # unsafe: an integer beyond 2^53 becomes its nearest float (a bound check refuses it, quoting it)
        col = pc.cast(col, pa.float64(), safe=False)
    else:
        out.column(name, "numbers", f"values of type {col.type}")
        return None
    values: np.ndarray = pc.fill_null(col, np.nan).to_numpy(False)
    return values


def _factors(
    cur: CurrencySource,
    table: pa.Table,
    rates: Callable[[pa.Array], np.ndarray],
    out: Problems,
    spec: FieldSpec,
    values: np.ndarray,
) -> np.ndarray | None:
    """Per row, the factor that converts ``values`` (the amounts, NaN where there is none) with the currency
    ``cur``; a currency cell that does not convert an amount is reported (:func:`_bad_currencies`)."""
    if cur.value is not None:
        return rates(pa.array([cur.value]))
    assert cur.column is not None  # parse_mapping guarantees one of the two
    codes, unreadable = text_of(table.column(cur.column).chunk(0), out, cur.column, _currency_where(cur, out))
    factors = rates(codes)
    # A code that converts nothing; a missing one only where there is an amount to convert (and not one
    # reported as not UTF-8 just now).
    given = pc.invert(pc.fill_null(pc.equal(pc.utf8_trim_whitespace(codes), ""), True))
    failed = np.isnan(factors) & (given.to_numpy(zero_copy_only=False) | ~np.isnan(values))
    failed[unreadable] = False
    if failed.any():
        _bad_currencies(cur.column, codes, np.flatnonzero(failed), spec, out)
    return factors


def _currency_where(cur: CurrencySource, out: Problems) -> str | None:
    """How a problem of the currency column of an amount names it: as the ``currency`` field's when that
    field reads the same column (``column 'cur' (currency)``, said once for both), else None (the default)."""
    root = out.fields.get("currency")
    if root is not None and root.kind == "column" and root.column == cur.column and root.map is None:
        return root.where
    return None


def _bad_currencies(column: str, codes: pa.Array, bad: np.ndarray, spec: FieldSpec, out: Problems) -> None:
    """Currency cells an amount cannot be converted with, reported once per cell (not again for each amount
    field converted with them), at their root: the ``currency`` field when it is read from the same column
    (``column 'cur' (currency)``, whose own checks of the cell would only say it again: it is marked), else
    as the amount's currency. A missing code (an empty cell, a blank text) is said as the currency field
    says it; a code that is no ISO 4217 code as the event table says it, with the code meant ('eru': the
    nearest code is 'eur'); an ISO code payfm has no rate or exponent for (``xof``) as such."""
    root = out.fields.get("currency")
    rooted = root is not None and root.kind == "column" and root.column == column and root.map is None
    where = (
        root.where if root is not None and rooted else f"column '{column}' (the currency of {spec.target})"
    )
    if rooted:
        out.mark("currency", bad)
    at = pa.array(bad)
    cells = pc.take(codes, at)
    empty = pc.fill_null(pc.or_(pc.equal(pc.utf8_trim_whitespace(cells), ""), pc.is_null(cells)), True)
    empty_np = np.asarray(empty.to_numpy(zero_copy_only=False), dtype=bool)
    iso = pc.is_in(pc.utf8_lower(cells), value_set=pa.array(sorted(currency.currency_codes())))
    known = np.asarray(pc.fill_null(iso, False).to_numpy(zero_copy_only=False), dtype=bool) & ~empty_np
    missing, other, unconverted = bad[empty_np], bad[~known & ~empty_np], bad[known]
    # (the key of each: the one the currency field's own check of the cell uses, so it is said once)
    if len(missing):
        nulls = pc.is_null(pc.take(codes, pa.array(missing[:KEEP]))).to_numpy(zero_copy_only=False)
        got = [out.empty if null else "an empty text" for null in nulls]
        expected = "a value (required field)" if rooted else f"a currency code (for '{spec.path}')"
        out.rows(column, missing, expected, got, key="a value (required field)", where=where)
    if len(other):
        got = []
        for i in other[:KEEP]:
            value = codes[int(i)].as_py()
            hint = currency.currency_hint(value).removesuffix(".")
            got.append(shown_value(value) + (f".{hint}" if hint else ""))
        out.rows(column, other, currency.DESCRIBED, got, key="a currency code", where=where)
    if len(unconverted):
        out.rows(
            column,
            unconverted,
            f"a currency that payfm converts (for '{spec.path}'; the codes of payfm.events.currency)",
            values_at(codes, unconverted),
            key="a currency code",
            where=where,
        )


def shortest_floats(col: pa.Array) -> pa.Array:
    """A float32 (or float16) column as float64 of the shortest decimal that reads back as each value:
    pandas' ``reduce_mem_usage`` stores 13.8 dollars as the float32 13.80000019073486328125, which as a
    float64 is 1380.000019... cents, a fraction of a cent; the exporter meant 13.8 (Arrow writes a float as
    its shortest round-tripping decimal). Other columns are returned as they are."""
    if pa.types.is_float32(col.type) or pa.types.is_float16(col.type):
        return pc.cast(pc.cast(col, pa.string()), pa.float64())
    return col


def to_ints(spec: FieldSpec, table: pa.Table, table_name: str, out: Problems) -> pa.Array | None:
    n = table.num_rows
    if spec.kind == "value":
        return pa.repeat(pa.scalar(spec.value, type=pa.int64()), n)
    col = shortest_floats(source_values(spec, table))
    plain = plain_numbers(col, spec, out)  # (``col``, as the file has it, is what messages quote)
    if spec.scale is None and spec.minor_units is None and spec.usd_cents is None:
        ints = _as_integers(spec.source, plain, out, col)
        if not pa.types.is_int64(ints.type):
            return ints
        if spec.negative:  # (a message quotes the file's value: '4' (-4 in minor units))
            return _in_range(spec, table_name, pc.negate(ints), col, out)
        return _in_range(spec, table_name, ints, None, out)
    values = to_floats(plain, spec.column, out)
    if values is None:
        return None
    if spec.scale is not None:
        factors: np.ndarray | None = np.full(n, spec.scale)
    elif spec.minor_units is not None:
        factors = _factors(spec.minor_units, table, currency.minor_unit_factors, out, spec, values)
    else:
        assert spec.usd_cents is not None
        factors = _factors(spec.usd_cents, table, currency.usd_cents_factors, out, spec, values)
    if factors is None:
        return None
    if spec.negative:
        factors = -factors
    with np.errstate(over="ignore", invalid="ignore"):  # 1e308 * 100 is inf, reported just below
        scaled = values * factors
    # Values no int64 holds (1e30 dollars, an overflow to inf) are reported with the file's value and the
    # field's bounds, before a cast would turn them into -9223372036854775808.
    huge = np.flatnonzero(np.abs(np.nan_to_num(scaled, nan=0.0)) >= 2.0**63)
    if len(huge):
        rule = RULES.get(table_name, {}).get(spec.target)
        bounds = rule.expected() if rule is not None else "an integer of at most 64 bits"
        out.rows(
            spec.column,
            huge,
            f"{bounds} (minor units, after '{spec.path}' conversion)",
            values_at(col, huge),
            key="an integer of at most 64 bits",  # one report per cell when amount and amount_usd read it
        )
        scaled = scaled.copy()
        scaled[huge] = np.nan
    rounded = np.round(scaled)  # half-even
    if spec.usd_cents is None:
        # A scaled amount must be whole minor units; rounding only absorbs float noise (13.8 * 100): a
        # millionth of a unit, or some thousands of units in the last place of a large amount (float64 has
        # 2**-52 of it). A tolerance of 1e-9 of the amount passed half a unit from $5M (5e8 cents) on.
        size = np.abs(scaled)
        off = np.abs(scaled - rounded) > np.maximum(1e-6 + 1e-12 * size, 4 * np.spacing(size))
        bad = np.flatnonzero(off & ~np.isnan(scaled))
        if len(bad):
            out.rows(
                spec.column,
                bad,
                f"whole minor units after '{spec.path}' scaling (no fractions of a cent)",
                values_at(col, bad),
                key="whole minor units",  # one report per cell when amount and amount_usd read one column
            )
            rounded[bad] = np.nan
    nulls = np.isnan(rounded)
    ints = pa.array(np.where(nulls, 0, rounded).astype(np.int64), mask=nulls)
    return _in_range(spec, table_name, ints, col, out)


def _in_range(
    spec: FieldSpec, table_name: str, ints: pa.Array, col: pa.Array | None, out: Problems
) -> pa.Array:
    """``ints`` with the values outside the field's bounds (an amount: 0 to 999,999,999,999) reported by the
    source column and null. Checked here, not by validate_events, so that a source cell read by two fields
    (``amount`` and ``amount_usd`` from ``amt``) is reported once, quoting the file's value (``col``, when
    converted: ``'-5' (-500 in minor units)``)."""
    rule = RULES.get(table_name, {}).get(spec.target)
    if rule is None or rule.min_value is None:
        return ints
    outside = pc.less(ints, rule.min_value)
    if rule.max_value is not None:
        outside = pc.or_(outside, pc.greater(ints, rule.max_value))
    outside = pc.fill_null(outside, False)
    bad = np.flatnonzero(outside.to_numpy(zero_copy_only=False))
    if not len(bad):
        return ints
    numbers = [shown_number(ints[int(i)].as_py()) for i in bad[:KEEP]]
    if col is None:
        expected, got = rule.expected(), numbers
    else:
        expected = f"{rule.expected()} (minor units, after '{spec.path}' conversion)"
        got = [f"{v} ({n} in minor units)" for v, n in zip(values_at(col, bad), numbers, strict=True)]
    if spec.negative:
        expected += "; with sign: negative the file writes the amount negative"
    elif rule.min_value >= 0 and _mostly_negative(ints):  # (one negative among many: a data error)
        expected += "; a file that writes amounts negative (refunds, chargebacks) needs sign: negative"
    out.rows(spec.source, bad, expected, got, key="a value in the field's range")
    return pc.if_else(outside, pa.scalar(None, pa.int64()), ints)


def _mostly_negative(ints: pa.Array) -> bool:
    """Whether most of a column's amounts are negative: the file writes them so (a refunds report), and the
    mapping lacks ``sign: negative``."""
    negative = pc.sum(pc.cast(pc.less(ints, 0), pa.int64())).as_py() or 0
    return bool(negative * 2 > len(ints) - ints.null_count)


def _as_integers(name: str, col: pa.Array, out: Problems, written: pa.Array) -> pa.Array:
    """``col`` (the source ``name``, its numbers as :func:`plain_numbers` rewrites them; ``written``: as the
    file has it, what messages quote) read as integers as it is (no scale): int64 when it casts as a whole;
    else int64 with the cells that do not cast reported (in validate_events' words) and null, so that the
    bounds of the cells that do are still checked: one cell 'x' used to hide every out-of-bounds value of
    the column, and the total was short. A column of which nothing casts (another type) comes back as it
    is: validate_events says how."""
    cast, bad = try_cast(col, pa.int64())
    if cast is not None:
        return cast
    ok = np.ones(len(col), dtype=bool)
    ok[bad] = False
    if not ok.any() or not len(bad):
        return col  # nothing casts (a column of another type): validate_events says how
    if pa.types.is_floating(col.type):  # a fraction of a minor unit, as validate_events words it
        values = col.to_numpy(zero_copy_only=False)[bad]
        fraction = np.isfinite(values) & (np.floor(values) != values)
        if fraction.any():
            out.rows(name, bad[fraction], "an integer (minor units)", values_at(written, bad[fraction]))
        bad = bad[~fraction]
    if len(bad):
        out.rows(name, bad, "an integer", values_at(written, bad))
    return pc.cast(pc.if_else(pa.array(ok), col, pa.scalar(None, col.type)), pa.int64())
