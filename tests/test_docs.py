"""The docs describe what exists: every schema field is documented with its own words."""

from __future__ import annotations

from pathlib import Path

from payfm.events.schema import SCHEMAS

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_every_event_field_is_documented_with_its_schema_text() -> None:
    text = (DOCS / "events.md").read_text()
    for table, schema in SCHEMAS.items():
        section = text.split(f"### `{table}`", 1)
        assert len(section) == 2, f"docs/events.md has no section for table '{table}'"
        body = section[1].split("### ", 1)[0]
        for field in schema:
            doc = field.metadata[b"doc"].decode()
            rows = [line for line in body.splitlines() if line.startswith(f"| `{field.name}` |")]
            assert len(rows) == 1, f"'{table}.{field.name}' is not documented exactly once"
            cells = [c.strip() for c in rows[0].strip("|").split("|")]
            assert cells[2] == ("yes" if not field.nullable else "no"), f"'{table}.{field.name}' required"
            assert cells[-1] == doc, f"the doc of '{table}.{field.name}' differs from the schema"
