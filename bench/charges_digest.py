"""A digest of a workspace's charges as the foundation model reads them (``payfm.fm.sequences.read_charges``):
equal digests mean two machines would pretrain on the same charges, whatever their library versions.

    .venv/bin/python bench/charges_digest.py WORKSPACE [--until-frac 0.7]
"""

from __future__ import annotations

import argparse
import hashlib

import numpy as np
import pyarrow as pa

from payfm.events.workspace import Workspace
from payfm.fm.sequences import read_charges, time_cut


def digest(table: pa.Table) -> str:
    h = hashlib.sha256()
    for name in sorted(table.column_names):
        column = table[name]
        h.update(name.encode())
        if pa.types.is_integer(column.type):
            h.update(np.ascontiguousarray(column.to_numpy(), dtype=np.int64).tobytes())
        else:
            h.update("\x1f".join("\x00" if v is None else str(v) for v in column.to_pylist()).encode())
    return h.hexdigest()[:16]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workspace")
    ap.add_argument("--until-frac", type=float, default=None, help="only the charges before this cut")
    args = ap.parse_args()
    ws = Workspace.open(args.workspace)
    until = time_cut(ws, args.until_frac) if args.until_frac else None
    table = read_charges(ws, until_us=until)
    print(f"{args.workspace}: {table.num_rows} charges, digest {digest(table)}")


if __name__ == "__main__":
    main()
