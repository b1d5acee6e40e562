"""The live schema, as GET /api/schema describes it: every table and view with its columns,
keys, constraints and indexes, reflected on each call. Works on SQLite too."""
import warnings

from sqlalchemy import exc, inspect

from ..extensions import db
from . import guard


def describe():
    """The live schema: every table and view with its columns, keys, constraints, indexes.
    Reflected on each call (an admin endpoint; correctness over speed). Works on SQLite too."""
    with warnings.catch_warnings():
        # SQLite cannot reflect expression indexes (uq_users_email_lower); they are left out there.
        warnings.filterwarnings("ignore", "Skipped unsupported reflection", exc.SAWarning)
        return _describe(inspect(db.engine), db.engine.dialect)


def _describe(insp, dialect):
    tables = [(n, "table") for n in insp.get_table_names()] + [(n, "view") for n in insp.get_view_names()]
    out = []
    for name, kind in sorted(tables):
        entry = {"name": name, "kind": kind, "core": guard.is_core(name),
                 "columns": [_column(c, dialect) for c in insp.get_columns(name)]}
        if kind == "table":
            pk = insp.get_pk_constraint(name)
            entry.update(
                primary_key={"name": pk.get("name"), "columns": pk.get("constrained_columns", [])},
                foreign_keys=[{"name": fk.get("name"), "columns": fk["constrained_columns"],
                               "references": fk["referred_table"], "referred_columns": fk["referred_columns"]}
                              for fk in insp.get_foreign_keys(name)],
                unique_constraints=[{"name": u.get("name"), "columns": u["column_names"]}
                                    for u in insp.get_unique_constraints(name)],
                check_constraints=[{"name": c.get("name"), "sqltext": str(c["sqltext"])}
                                   for c in insp.get_check_constraints(name)],
                indexes=[{"name": i["name"], "unique": bool(i["unique"]),
                          "columns": [c for c in i["column_names"] if c],
                          "expressions": [e for e in i.get("expressions", []) if e] if any(
                              c is None for c in i["column_names"]) else []}
                         for i in insp.get_indexes(name)],
            )
        out.append(entry)
    return {"dialect": dialect.name, "tables": out}


def _column(c, dialect):
    try:
        type_name = c["type"].compile(dialect=dialect)
    except exc.CompileError:
        type_name = str(c["type"])
    default = c.get("default")
    return {"name": c["name"], "type": type_name, "nullable": bool(c["nullable"]),
            "default": None if default is None else str(default)}
