"""Measure `payfm import` of the Sparkov export (../shared/data) as Parquet, CSV and gzipped CSV.

The export's 58,999 rows are repeated ``--copies`` times (each copy's transaction ids made unique) and written
in the three formats; each is imported into a fresh workspace with the bundled ``sparkov`` mapping, timed
whole (read, map, scan for card numbers, fingerprint, validate, write) and its reading alone
(``read_source``). Usage:

    .venv/bin/python bench/bench_import.py                 # 8 copies: 471,992 rows, a 157 MiB CSV file
    .venv/bin/python bench/bench_import.py --copies 1 --repeat 1
    .venv/bin/python bench/bench_import.py --join   # and the same export in two files (`join`)

``--join`` also splits each file in two, as IEEE-CIS ships transactions and identities: the transactions
without ``merchant`` and ``category``, and those two columns keyed by a row number (Sparkov writes some
``trans_num`` twice) in a second file of the same format, its rows shuffled; the ``sparkov`` mapping with
``join: {column: row_id}`` imports them.
"""

from __future__ import annotations

import argparse
import gzip
import random
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from machine import describe  # bench/machine.py
from payfm.events.importer import import_file, read_source
from payfm.events.mapping import resolve_mapping
from payfm.events.workspace import Workspace

SPARKOV = Path(__file__).resolve().parents[2] / "shared/data/sparkov_generated/sparkov_300cust_2023Q1.parquet"


def sources(folder: Path, copies: int) -> list[Path]:
    """The export repeated ``copies`` times, as .parquet, .csv and .csv.gz files in ``folder``."""
    one = pq.read_table(SPARKOV)
    parts = []
    for k in range(copies):
        ids = pc.binary_join_element_wise(one["trans_num"].cast(pa.string()), pa.scalar(f"-{k}"), "")
        parts.append(one.set_column(one.schema.get_field_index("trans_num"), "trans_num", ids))
    table = pa.concat_tables(parts)
    paths = [folder / "sparkov.parquet", folder / "sparkov.csv", folder / "sparkov.csv.gz"]
    pq.write_table(table, paths[0])
    pacsv.write_csv(table, paths[1])
    with paths[1].open("rb") as f, gzip.open(paths[2], "wb", compresslevel=6) as g:
        shutil.copyfileobj(f, g)
    return paths


def split(path: Path, folder: Path) -> tuple[Path, Path, Path]:
    """``path`` as two files of its format (transactions; merchant and category by row, shuffled) and
    the sparkov mapping that joins them."""
    table = pq.read_table(path) if path.suffix == ".parquet" else read_source(path)[0]
    # (a row number as the key: Sparkov writes some trans_num twice, which a join refuses)
    table = table.append_column("row_id", pa.array(range(table.num_rows), pa.int64()))
    second = table.select(["row_id", "merchant", "category"])
    order = list(range(second.num_rows))
    random.Random(0).shuffle(order)
    second = second.take(pa.array(order))
    first = table.drop_columns(["merchant", "category"])
    out = []
    for name, t in (("transactions", first), ("identities", second)):
        target = folder / f"{name}{''.join(path.suffixes)}"
        if path.suffix == ".parquet":
            pq.write_table(t, target)
        else:
            with pacsv.CSVWriter(target.with_suffix("") if target.suffix == ".gz" else target, t.schema) as w:
                w.write_table(t)
            if target.suffix == ".gz":
                with target.with_suffix("").open("rb") as f, gzip.open(target, "wb", compresslevel=6) as g:
                    shutil.copyfileobj(f, g)
        out.append(target)
    mapping = folder / "sparkov_join.yaml"
    mapping.write_text(resolve_mapping("sparkov").read_text() + "\njoin: {column: row_id}\n")
    return out[0], out[1], mapping


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=8, help="copies of the export's 58,999 rows (default 8)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each import; the best is reported")
    ap.add_argument("--join", action="store_true", help="also import each file split in two (`join`)")
    args = ap.parse_args()
    print(describe())
    with tempfile.TemporaryDirectory(prefix="payfm-bench-import-") as tmp:
        folder = Path(tmp)
        print("| file | size | rows | read (best) | import (best) | rows/s |")
        print("|---|---|---|---|---|---|")
        for path in sources(folder, args.copies):
            reads, imports, rows = [], [], 0
            for r in range(args.repeat):
                t0 = time.perf_counter()
                read_source(path)
                reads.append(time.perf_counter() - t0)
                ws = Workspace.open(folder / f"ws-{path.name}-{r}", create=True)
                t0 = time.perf_counter()
                rows = import_file(ws, path, "sparkov").rows_read
                imports.append(time.perf_counter() - t0)
                shutil.rmtree(ws.root)
            mib = path.stat().st_size / 2**20
            print(
                f"| {path.name} | {mib:.0f} MiB | {rows:,} | {min(reads):.2f} s | {min(imports):.2f} s "
                f"| {rows / min(imports):,.0f} |"
            )
            if args.join:
                parts = folder / f"split-{path.name}"
                parts.mkdir()
                first, second, mapping = split(path, parts)
                joins = []
                for r in range(args.repeat):
                    ws = Workspace.open(folder / f"ws-join-{path.name}-{r}", create=True)
                    t0 = time.perf_counter()
                    import_file(ws, first, mapping, join=second)
                    joins.append(time.perf_counter() - t0)
                    shutil.rmtree(ws.root)
                print(
                    f"| {path.name} in two files (`--join`) | | {rows:,} | | {min(joins):.2f} s "
                    f"| {rows / min(joins):,.0f} |"
                )


if __name__ == "__main__":
    main()
