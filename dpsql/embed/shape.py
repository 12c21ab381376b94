"""Check the rows a caller got back from the bounded SQL against the release plan.

The embedding API cannot see the caller's engine; what it can do is refuse anything that is not
the shape the bounded SQL returns (``dpsql.rewriter.plan``: one row per group, the key columns,
then one exact integer per statistic). :func:`check_rows` guarantees, or raises
:class:`~dpsql.errors.ReleaseRefused`:

* the column names are exactly the plan's, in order (compared case-insensitively: engines that
  fold unquoted names to upper case return the same columns); no extra, no missing column;
* every row is a sequence of that many values;
* every statistic is an exact integer (``int`` or an integral ``Decimal``; never a float, a
  bool, a string or NULL), and counts of rows and of units are not negative;
* every group key has a type compatible with the plan's PostgreSQL type (NULL allowed);
* no group appears twice (a repeated group would be noised and released twice);
* at most one row without GROUP BY; with public keys, every row's key is one of them.

Refusal messages name columns, positions and counts, never a value of a row. A refusal still
depends on the rows, so treat it as an operator's error (docs/embedding.md). The returned
:class:`ExactCells` hides its contents from ``repr``.
"""

from __future__ import annotations

import datetime as _dt
import math
import numbers
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from dpsql.errors import ReleaseRefused
from dpsql.rewriter.plan import ReleasePlan

_HINT = "pass the columns and rows your engine returned for the token's bounded SQL, unchanged"
_INT = frozenset({"int2", "int4", "int8"})
_FLOAT = frozenset({"float4", "float8", "numeric"})
_TEXT = frozenset({"text", "varchar", "bpchar", "name"})
_SCALAR = (str, int, float, Decimal, _dt.date, _dt.time, _dt.timedelta, uuid.UUID)


@dataclass(frozen=True)
class ExactCells:
    """The checked exact input of the noise step: ``keys[g]`` is group g's key tuple (raw, as the
    engine returned it) and ``exact[column][g]`` its exact statistic. Never logged or shown."""

    keys: list[tuple[Any, ...]] = field(repr=False)
    exact: dict[str, list[int]] = field(repr=False)

    @property
    def groups(self) -> int:
        """The number of groups (candidates, under partition selection)."""
        return len(self.keys)


def check_columns(plan: ReleasePlan, columns: Sequence[str]) -> None:
    """Refuse unless ``columns`` are the plan's bounded-SQL columns, in order (case-insensitive)."""
    expected = [k.column for k in plan.keys] + [s.column for s in plan.stats]
    if isinstance(columns, str | bytes) or not isinstance(columns, Sequence):
        raise ReleaseRefused("columns must be a sequence of column names", hint=_HINT)
    names = [c if isinstance(c, str) else None for c in columns]
    if any(n is None for n in names):
        raise ReleaseRefused("columns must be a sequence of column names (strings)", hint=_HINT)
    got = [n.lower() for n in names if n is not None]
    if got == expected:
        return
    extra = [n for n in got if n not in expected]
    missing = [c for c in expected if c not in got]
    stats = {s.column for s in plan.stats}
    parts = []
    if extra:
        parts.append(f"{len(extra)} unexpected column(s)")
    if missing:
        kinds = "statistic" if any(m in stats for m in missing) else "key"
        parts.append(f"missing {kinds} column(s) {', '.join(missing)}")
    if not parts:
        parts.append("the columns are out of order")
    raise ReleaseRefused(
        f"the rows do not match the release plan: {'; '.join(parts)} (expected {len(expected)} columns: {', '.join(expected)})",
        hint=_HINT,
    )


def check_rows(
    plan: ReleasePlan,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    public_keys: Sequence[tuple[Any, ...]] | None,
) -> ExactCells:
    """The exact cells of ``rows`` (the bounded SQL's result), or ReleaseRefused (see module).

    With ``public_keys`` (plans whose keys are public) the cells are aligned to those keys in their
    order, a key the rows lack getting exact zeros, as in the server's engine; otherwise they follow
    the rows' order (partition selection, or one cell without GROUP BY)."""
    check_columns(plan, columns)
    nkeys, width = len(plan.keys), len(plan.keys) + len(plan.stats)
    table = _materialise(rows)
    if not plan.keys and len(table) > 1:
        raise ReleaseRefused(f"a query without GROUP BY returns one row; got {len(table)}", hint=_HINT)
    if public_keys is not None and len(table) > len(public_keys):
        raise ReleaseRefused(f"too many groups: {len(table)} rows for {len(public_keys)} public key(s)", hint=_HINT)
    stats = [(i + nkeys, s.column, s.kind in ("count", "units")) for i, s in enumerate(plan.stats)]
    keys: list[tuple[Any, ...]] = []
    values: list[list[int]] = [[] for _ in stats]
    seen: set[tuple[Any, ...]] = set()
    for r, row in enumerate(table):
        if isinstance(row, str | bytes | dict) or not isinstance(row, Sequence):
            raise ReleaseRefused(f"row {r + 1} is not a sequence of values in column order", hint=_HINT)
        if len(row) != width:
            raise ReleaseRefused(f"row {r + 1} has {len(row)} values, the plan expects {width}", hint=_HINT)
        key = tuple(row[:nkeys])
        for i, k in enumerate(plan.keys):
            if not _key_ok(key[i], k.pg_type):
                raise ReleaseRefused(
                    f"row {r + 1}: key column {k.column} holds a {type(key[i]).__name__}, not a value of type {k.pg_type}",
                    hint=_HINT,
                )
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:
            raise ReleaseRefused(f"row {r + 1}: a key value is not hashable", hint=_HINT) from None
        if duplicate:
            raise ReleaseRefused(f"row {r + 1} repeats a group of an earlier row", hint=_HINT)
        keys.append(key)
        for j, (i, column, nonneg) in enumerate(stats):
            values[j].append(_exact(row[i], column, r, nonneg))
    exact_rows = {column: values[j] for j, (_, column, _) in enumerate(stats)}
    if public_keys is not None:
        return _aligned(public_keys, keys, exact_rows)
    if not plan.keys and not keys:
        return ExactCells([()], {c: [0] for c in exact_rows})
    return ExactCells(keys, exact_rows)


def normalise_public_keys(plan: ReleasePlan, rows: Iterable[Sequence[Any]] | None) -> list[tuple[Any, ...]] | None:
    """The public key set as the server's engine uses it (distinct tuples, first-seen order), or
    None when the plan has none. Raises ReleaseRefused for a missing set, a set given to a plan
    without public keys, rows of the wrong width, or keys of the wrong type. Public data only."""
    wanted = plan.keys_public and plan.public_keys_sql is not None
    if not wanted:
        if rows is not None:
            raise ReleaseRefused("this query releases no public key set; pass public_keys=None",
                                 hint="only queries whose PreparedQuery.public_keys_sql is set take public keys")
        return None
    if rows is None:
        raise ReleaseRefused("this query releases every public group key: pass public_keys=, the rows of its public_keys_sql",
                             hint="run PreparedQuery.public_keys_sql on your engine first (it reads public data only)")
    table = _materialise(rows)
    out: dict[tuple[Any, ...], None] = {}
    for r, row in enumerate(table):
        if isinstance(row, str | bytes | dict) or not isinstance(row, Sequence) or len(row) != len(plan.keys):
            raise ReleaseRefused(f"public key row {r + 1} does not have {len(plan.keys)} value(s)",
                                 hint="pass the public_keys_sql rows as returned")
        key = tuple(row)
        for i, k in enumerate(plan.keys):
            if not _key_ok(key[i], k.pg_type):
                raise ReleaseRefused(f"public key row {r + 1}: {k.column} is not a value of type {k.pg_type}",
                                     hint="pass the public_keys_sql rows as returned")
        try:
            out[key] = None
        except TypeError:
            raise ReleaseRefused(f"public key row {r + 1}: a key value is not hashable") from None
    return list(out)


def _materialise(rows: Iterable[Sequence[Any]]) -> list[Sequence[Any]]:
    if isinstance(rows, str | bytes | dict):
        raise ReleaseRefused("rows must be an iterable of row sequences", hint=_HINT)
    try:
        return list(rows)
    except TypeError:
        raise ReleaseRefused("rows must be an iterable of row sequences", hint=_HINT) from None


def _aligned(public: Sequence[tuple[Any, ...]], keys: list[tuple[Any, ...]], exact: dict[str, list[int]]) -> ExactCells:
    position = {k: g for g, k in enumerate(keys)}
    index: dict[tuple[Any, ...], int] = {}
    for g, k in enumerate(public):
        index.setdefault(k, g)
    if any(k not in index for k in keys):
        raise ReleaseRefused("a row's group key is not one of the public keys of this query",
                             hint="run the token's bounded SQL and the query's public_keys_sql on the same engine and data")
    out = {c: [v[position[k]] if k in position else 0 for k in public] for c, v in exact.items()}
    return ExactCells(list(public), out)


def _exact(v: Any, column: str, r: int, nonneg: bool) -> int:
    """One statistic as an exact Python int; ReleaseRefused (naming the type, not the value)."""
    if isinstance(v, bool) or v is None:
        got = "NULL" if v is None else "a bool"
        raise ReleaseRefused(f"row {r + 1}: statistic column {column} holds {got}, not an exact integer", hint=_HINT)
    if isinstance(v, numbers.Integral) or (isinstance(v, Decimal) and v.is_finite() and v == v.to_integral_value()):
        n = int(v)
    else:
        what = "a non-integral decimal" if isinstance(v, Decimal) else f"a {type(v).__name__}"
        raise ReleaseRefused(
            f"row {r + 1}: statistic column {column} holds {what}, not an exact integer",
            hint="the engine must return the statistics as exact integers (BIGINT, HUGEINT, NUMERIC or DECIMAL(38,0)), never floats",
        )
    if nonneg and n < 0:
        raise ReleaseRefused(f"row {r + 1}: count column {column} is negative", hint=_HINT)
    return n


def _key_ok(v: Any, pg_type: str) -> bool:
    """Whether ``v`` can stand for a key of ``pg_type`` (the types engines return for it)."""
    if v is None:
        return True
    if pg_type in _INT:
        if isinstance(v, bool):
            return False
        if isinstance(v, numbers.Integral):
            return True
        if isinstance(v, Decimal):
            return v.is_finite() and v == v.to_integral_value()
        return isinstance(v, float) and math.isfinite(v) and v == int(v)
    if pg_type in _FLOAT:
        return not isinstance(v, bool) and isinstance(v, numbers.Integral | float | Decimal)
    if pg_type == "bool":
        return isinstance(v, bool)
    if pg_type == "date":
        return isinstance(v, _dt.date)
    if pg_type in ("timestamp", "timestamptz"):
        return isinstance(v, _dt.date)  # datetime, or a DATE from engines whose date_trunc keeps it
    if pg_type == "interval":
        return isinstance(v, _dt.timedelta)
    if pg_type in _TEXT:
        # the rewriter types keys it cannot name as text and the engine shows them as text:
        # any scalar (str() is applied on release, as in the server)
        return isinstance(v, _SCALAR) and not isinstance(v, bool)
    return isinstance(v, (*_SCALAR, bool))
