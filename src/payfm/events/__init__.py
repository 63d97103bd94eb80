"""The payment event log: schemas, validation, the workspace and imports."""

from payfm.events.schema import SCHEMAS, TABLES, schema_of

__all__ = ["SCHEMAS", "TABLES", "schema_of"]
