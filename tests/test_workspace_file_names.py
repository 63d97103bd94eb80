"""The event log's file names never read as a card number: every message naming a file passes through the
card-number redaction, and a writer id of hex digits alone (1 in 280) made, with the file's number, a run of
17 digits that passed the Luhn check 1 time in 10: the file was then named `part-[card number removed]`
(a flaky-test audit: two tests failed about 3 times in 10,000 runs)."""

from __future__ import annotations

import re
from pathlib import Path

from factories import charges
from payfm.events import workspace
from payfm.events.cards import redact_card_numbers
from payfm.events.workspace import Workspace


def test_writer_ids_are_letters_so_a_file_name_holds_no_long_digit_run(tmp_path: Path) -> None:
    ids = {workspace._txid() for _ in range(5_000)}
    assert len(ids) == 5_000 and all(re.fullmatch(r"[a-z]{12}", i) for i in ids)
    ws = Workspace.open(tmp_path / "ws", create=True)
    with ws.writer() as w:
        w.write("charges", charges(5))
    names = [p.name for p in (tmp_path / "ws" / "charges").rglob("*.parquet")]
    assert names and all(re.fullmatch(r"part-[a-z]{12}-\d{5}\.parquet", n) for n in names), names
    # the shape that was redacted: 12 digits and the file's number
    assert redact_card_numbers("part-400000000003-00000.parquet") != "part-400000000003-00000.parquet"
    assert all(redact_card_numbers(f"'{n}'") == f"'{n}'" for n in names)
