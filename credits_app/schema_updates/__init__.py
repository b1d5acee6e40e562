"""External schema updates: an operator's SQL, checked and applied to the live database.

- schema_updates/guard.py: what a statement may do, judged on its parse tree before it runs;
- schema_updates/guard_users.py: the rules for columns added to `users`;
- schema_updates/probes.py: the checks only the database can answer, run after the statements;
- schema_updates/apply.py: one update as one transaction, and its record (schema_changes);
- schema_updates/describe.py: the live schema, reflected;
- api/schema.py: /api/schema; cli/schema.py: `flask schema`.
"""
from .apply import (NAME, SCHEMA_LOCK_KEY, NotSupportedOnSQLite, SchemaChangeBusy, SchemaChangeFailed,
                    SchemaChangeRefused, SchemaLockTimeout, SchemaLogMissing, SchemaNameConflict, apply, checksum,
                    derived_name, history, recorded)
from .describe import describe

__all__ = ["NAME", "SCHEMA_LOCK_KEY", "NotSupportedOnSQLite", "SchemaChangeBusy", "SchemaChangeFailed",
           "SchemaChangeRefused", "SchemaLockTimeout", "SchemaLogMissing", "SchemaNameConflict", "apply",
           "checksum", "derived_name", "history", "recorded", "describe"]
