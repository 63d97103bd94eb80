"""Measure the card-number scan of whole columns (``payfm.events.cards.card_number_rows``), which every import
runs over every column and ``payfm sql`` over the rows it shows.

Two inputs: the charges of a generated world (31 columns, mostly ASCII ids, codes and times) and one column
of accented street addresses (text of another script than ASCII, where RE2's Unicode classes run). Each is
scanned whole, the best of ``--repeat`` runs. Usage:

    .venv/bin/python bench/bench_card_scan.py                       # 1M charges, 500k addresses
    .venv/bin/python bench/bench_card_scan.py --charges 100000 --repeat 1
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from machine import describe  # bench/machine.py
from payfm.events.cards import card_number_rows
from payfm.synth import WorldConfig, generate_world


def best(scan: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        scan()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--charges", type=int, default=1_000_000, help="charges of the generated world")
    ap.add_argument("--addresses", type=int, default=500_000, help="values of the non-ASCII column")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each scan; the best is reported")
    args = ap.parse_args()
    print(describe())
    world = generate_world(WorldConfig(charges=args.charges))
    charges = pa.concat_tables([t for name, t in world if name == "charges"])
    rng = np.random.default_rng(0)
    streets = ["Müllerstraße", "Rue de l'Église", "Calle Año Nuevo", "Østergade", "Καλαμάτας"]
    addresses = pa.array(
        [
            f"{streets[i % 5]} {rng.integers(1, 200)}, {rng.integers(1000, 99999)}"
            for i in range(args.addresses)
        ]
    )
    whole = best(lambda: [card_number_rows(c) for c in charges.columns], args.repeat)
    wide = best(lambda: card_number_rows(addresses), args.repeat)
    print("| input | values | scan (best) |")
    print("|---|---|---|")
    print(f"| charges, every column | {charges.num_rows:,} x {charges.num_columns} | {whole:.2f} s |")
    print(f"| accented addresses | {len(addresses):,} | {wide:.2f} s |")


if __name__ == "__main__":
    main()
