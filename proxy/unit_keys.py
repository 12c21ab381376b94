"""Start-up check of the policy's key paths (``privacy_unit = { via = …, references = … }``).

A keyed table's row belongs to the unit of the referenced row; that is one unit only if the
referenced column is unique in the data. The policy must declare it (``unique = true``, checked at
load); :func:`check_unit_keys` checks the data when the engine starts and refuses to start
(PolicyError naming the column) when some non-NULL value appears twice. The check reads the
referenced tables once, before any query, and only the operator sees its outcome.

On a source that can change while dpsql serves (PostgreSQL) the check holds for the data at
start-up: keep a UNIQUE constraint (or primary key) on the referenced column there.
"""

from __future__ import annotations

from sqlglot import exp

from dpsql.errors import PolicyError
from dpsql.policy import Policy
from dpsql.proxy.backends.base import Backend

__all__ = ["check_unit_keys", "duplicate_key_sql"]


def duplicate_key_sql(table: str, column: str, policy: Policy, dialect: str) -> str:
    """Engine SQL returning one row (``1``) when ``column`` of the policy table ``table``
    (qualified) has a non-NULL value on more than one row, and no row otherwise."""
    from dpsql.rewriter import physical_names

    tp = policy.tables[table]
    col = exp.column(column, table="t", quoted=True)
    inner = (
        exp.select(col.copy())
        .from_(
            exp.Table(
                this=exp.to_identifier(tp.table, quoted=True),
                db=exp.to_identifier(tp.schema, quoted=True),
                alias=exp.TableAlias(this=exp.to_identifier("t")),
            )
        )
        .where(col.copy().is_(exp.null()).not_())
        .group_by(col.copy())
        .having(exp.GT(this=exp.Count(this=exp.Star()), expression=exp.Literal.number(1)))
        .limit(1)
    )
    query = exp.select(exp.Literal.number(1)).from_(inner.subquery("d"))
    return physical_names(query, dialect).sql(dialect)


def check_unit_keys(policy: Policy, backend: Backend) -> None:
    """Raise PolicyError (``tables.T.columns.C.unique``) when a column that a key path references
    is not unique in ``backend``'s data; do nothing for a policy without keyed tables."""
    referenced = dict.fromkeys((s.table, s.column) for tp in policy.tables.values() for s in tp.unit_path)
    if not referenced:
        return
    session = backend.session()
    try:
        for table, column in referenced:
            result = session.execute(duplicate_key_sql(table, column, policy, backend.dialect))
            if result.rows:
                name = policy.tables[table].name
                raise PolicyError(
                    str(policy.file),
                    f"tables.{name}.columns.{column}.unique",
                    f"{name}.{column} is referenced by a key path but some of its values appear on more than "
                    "one row in the data, so a row reached through it could belong to several units; "
                    "make the column unique (a primary key or UNIQUE constraint) or change the key path",
                )
    finally:
        session.close()
