"""The payment event log: schemas, validation, the workspace and imports.

:class:`payfm.events.workspace.Workspace` holds the log (Parquet by day, one manifest, atomic writes);
:mod:`payfm.events.schema` its tables, :func:`payfm.events.validate.validate_events` the checks every write
makes, :func:`payfm.events.importer.import_file` imports an export through a mapping (docs/events.md,
docs/import.md).
"""

from payfm.events.schema import SCHEMAS, TABLES, schema_of

__all__ = ["SCHEMAS", "TABLES", "schema_of"]
