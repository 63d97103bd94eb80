"""Measure how often benign text reads as a card number: written with colons, pluses, parentheses or
commas; phone numbers, IBANs, epoch times.

payfm detects card numbers written `4111:1111:1111:1111`, `4111+1111+...` and `(4111) 1111-...` (module
payfm.events.cards); commas are not taken. This counts, on seeded random values of each kind, how many
`contains_card_number` flags, and how many would be flagged if commas were taken with the same checks (the
value's commas read as colons). Usage:

    .venv/bin/python bench/bench_card_false_positives.py              # 100,000 values of each kind
    .venv/bin/python bench/bench_card_false_positives.py --n 10000
"""

from __future__ import annotations

import argparse
import ipaddress
import random
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from machine import describe  # bench/machine.py
from payfm.events.cards import card_number_rows, contains_card_number

SPARKOV = Path(__file__).resolve().parents[2] / "shared/data/sparkov_generated/sparkov_300cust_2023Q1.parquet"
_MCC_TEXT = (  # merchant category codes
    "4111 4121 4131 4214 4411 4511 4722 4784 4812 4814 4816 4829 4899 4900 5045 5094 5111 5200 5251 5311 "
    "5331 5399 5411 5422 5441 5451 5462 5499 5511 5541 5542 5651 5661 5691 5699 5712 5722 5732 5734 5735 "
    "5812 5813 5814 5912 5921 5932 5942 5944 5945 5947 5964 5965 5966 5967 5968 5969 5977 5992 5993 5994 "
    "5999 6010 6011 6012 6051 6211 6300 7011 7230 7273 7298 7311 7372 7399 7512 7523 7538 7542 7832 7841 "
    "7922 7991 7994 7995 7996 7997 7999 8011 8021 8043 8062 8099 8111 8220 8299 8398 8641 8661 8999 9222 "
    "9311 9399 9402"
)
MCC = _MCC_TEXT.split(" ")


def corpora(rng: random.Random) -> dict[str, Callable[[], str]]:
    def d4() -> str:
        return f"{rng.randrange(10000):04d}"

    def ipv6_group() -> str:
        return d4() if rng.random() < 0.5 else f"{rng.randrange(65536):04x}"

    return {
        "IPv6, half the groups all-digit (exploded)": lambda: (
            ipaddress.IPv6Address(":".join(ipv6_group() for _ in range(8))).exploded
        ),
        "IPv6, half the groups all-digit (compressed)": lambda: str(
            ipaddress.IPv6Address(":".join(ipv6_group() for _ in range(8)))
        ),
        "IPv6, four all-digit groups then ::": lambda: ":".join(d4() for _ in range(4)) + "::1",
        "times HH:MM:SS": lambda: f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}",
        "durations HHHH:MM:SS:FFFF": lambda: f"{d4()}:{rng.randrange(60):02d}:{rng.randrange(60):02d}:{d4()}",
        "ISO times with an offset": lambda: f"2023-01-{1 + rng.randrange(28):02d}T{d4()[:2]}:00:03+0000",
        "phones +1 (NPA) NXX-XXXX": lambda: (
            f"+1 ({rng.randrange(200, 1000)}) {rng.randrange(200, 1000)}-{d4()}"
        ),
        "phones +44 (0) 20 NNNN NNNN": lambda: f"+44 (0) 20 {d4()} {d4()}",
        "phones (0NNN) NNNN NNNN": lambda: f"({rng.randrange(100, 1000):04d}) {d4()} {d4()}",
        "year lists, 4 years 1900-2099, ','": lambda: ",".join(
            str(rng.randrange(1900, 2100)) for _ in range(4)
        ),
        "ZIP lists, 4 codes, ','": lambda: ",".join(f"{rng.randrange(100000):05d}" for _ in range(4)),
        "MCC lists, 4 codes, ','": lambda: ",".join(rng.sample(MCC, 4)),
        "amount lists, 4 amounts 1000-9950, ','": lambda: ",".join(
            str(rng.randrange(20, 200) * 50) for _ in range(4)
        ),
        "random 4-digit lists, ','": lambda: ",".join(d4() for _ in range(4)),
        "sums of four 4-digit numbers, '+'": lambda: "+".join(
            str(rng.randrange(1000, 10000)) for _ in range(4)
        ),
        "German mobiles +49 15NN NNNNNNN": lambda: (
            f"+49 15{rng.randrange(100):02d} {rng.randrange(10**7):07d}"
        ),
        "German IBANs in groups of four": lambda: _grouped(
            f"DE{rng.randrange(100):02d}{rng.randrange(10**18):018d}"
        ),
        "epoch milliseconds 2020-2030": lambda: str(rng.randrange(1_577_836_800_000, 1_893_456_000_000)),
    }


def _grouped(text: str) -> str:
    """``text`` in groups of four characters, as IBANs are printed."""
    return " ".join(text[i : i + 4] for i in range(0, len(text), 4))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="values of each kind")
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args()
    print(f"# {describe()}", flush=True)
    print(f"{'kind':45s} {'values':>8s} {'flagged':>8s} {'if commas were taken':>21s}")
    for name, make in corpora(random.Random(args.seed)).items():
        values = [make() for _ in range(args.n)]
        flagged = sum(contains_card_number(v) for v in values)
        commas = sum(contains_card_number(v.replace(",", ":")) for v in values if "," in v)
        share = f"{commas / args.n:.1%}" if any("," in v for v in values[:100]) else "-"
        print(f"{name:45s} {args.n:8,d} {flagged / args.n:8.2%} {share:>21s}", flush=True)
    if SPARKOV.exists():
        table = pq.read_table(SPARKOV)
        cells = sum(
            len(card_number_rows(table.column(c).cast(pa.string())))
            for c in table.column_names
            if c != "cc_num"
        )
        lines = [",".join(str(v) for v in row.values()) for row in table.drop(["cc_num"]).to_pylist()]
        rows = sum(contains_card_number(line) for line in lines)
        print(
            f"Sparkov export without cc_num: {cells} cells, {rows} of {len(lines):,} rows (CSV lines) flagged"
        )


if __name__ == "__main__":
    main()
