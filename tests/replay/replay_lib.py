"""T1 sensitivity replay (security.md §4): run the rewriter's bounded SQL, noise off, on D and on
D minus one privacy unit, and check every change against the sensitivities the plan declares.

The pieces:

* a small policy (:data:`POLICY`) over a private table ``t`` (unit ``uid``; int, float, text,
  date columns, one float column whose bounds [2, 5] do not contain 0), a second private table
  ``e`` whose few declared values need no per-unit group ranking, and a public table ``p``;
* :data:`SHAPES`: one query per supported query shape;
* :class:`DB`: a database as Python rows, built from a compact :class:`DBSpec` (what Hypothesis
  draws) by :func:`materialize`, or by hand for the fixed adversarial databases;
* :func:`replay`: loads a batch of databases into one in-memory DuckDB, stacks every variant
  (D, D minus u, only u) of every database in one table with a ``__rep`` column, runs each
  shape's bounded SQL once over the stack (see :func:`lift`), and returns a :class:`Report`
  whose ``problems`` list every violation of the plan's sensitivities as a readable string (an
  empty list means the plan held). Group keys are compared as DuckDB's text of the value (see
  :func:`keyed`); a group absent from a result counts as all-zero statistics.

**Lifting.** Planning a bounded query costs DuckDB 1–5 ms, so running it once per variant (200
databases × 30 shapes × up to 101 variants) would take an hour. :func:`lift` only *adds* the
variant id ``__rep`` to what the bounded SQL already partitions by: the projection of each
layer, every GROUP BY (a global aggregate gets ``GROUP BY __rep``), and every window's
``PARTITION BY``, each join between two lifted layers (``a.__dp_rep = b.__dp_rep`` in its ON),
each ``x IN (SELECT … FROM lifted)`` (``(x, rep) IN (SELECT …, __dp_rep …)``: the row cap's unit
lists), each branch of a lifted UNION ALL; and it points the private tables at their stacks. Nothing the product wrote is
removed or reordered, so a bounding defect survives lifting. The lifting itself is checked in
every batch against direct, unmodified execution of the bounded SQL on single variants
(:func:`replay`'s ``verify`` argument).
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import duckdb
import numpy as np
import sqlglot
from sqlglot import exp

from dpsql.accountant.calibration import sensitivity_norms
from dpsql.policy import Policy, policy_from_dict
from dpsql.rewriter import rewrite
from dpsql.rewriter.plan import ReleasePlan, Rewrite
from dpsql.schema import Catalog, build_catalog

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
INT32_MAX = 2**31 - 1
INT32_MIN = -(2**31)

T_MAX_GROUPS, T_MAX_ROWS = 2, 3
E_MAX_GROUPS, E_MAX_ROWS = 2, 1

POLICY: dict[str, Any] = {
    "server": {"auth": "trust"},
    "privacy": {"accounting": "zcdp", "default_epsilon": 1.0, "default_delta": 1e-7},
    "budget": {"epsilon": 1000.0, "delta": 1e-3},
    "users": {"alice": {}},
    "tables": {
        "t": {
            "privacy_unit": "uid",
            "max_groups": T_MAX_GROUPS,
            "max_rows": T_MAX_ROWS,
            "columns": {
                "a": {"lower": 0, "upper": 10},
                "x": {"lower": -5.0, "upper": 20.0},
                "y": {"lower": 2.0, "upper": 5.0},  # 0 is outside [L, U]: SUM must use max(|L|,|U|) = 5 (R7)
                "g": {"values": ["a", "b", "c"]},
                "h": {},
                "d": {},
                "k": {},
            },
        },
        "e": {
            "privacy_unit": "uid",
            "max_groups": E_MAX_GROUPS,
            "max_rows": E_MAX_ROWS,
            "columns": {"v": {"lower": -3, "upper": 7}, "c": {"values": ["x", "y"]}, "w": {"values": [1, 2, 3]}},
        },
        "p": {"public": True},
    },
}

T_COLUMNS: tuple[tuple[str, str, str], ...] = (  # name, PostgreSQL type, DuckDB type
    ("uid", "int8", "BIGINT"),
    ("a", "int8", "BIGINT"),
    ("x", "float8", "DOUBLE"),
    ("y", "float8", "DOUBLE"),
    ("g", "text", "VARCHAR"),
    ("h", "text", "VARCHAR"),
    ("d", "date", "DATE"),
    ("k", "int4", "INTEGER"),
)
E_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("uid", "int8", "BIGINT"),
    ("v", "int4", "INTEGER"),
    ("c", "text", "VARCHAR"),
    ("w", "int4", "INTEGER"),
)
P_COLUMNS: tuple[tuple[str, str, str], ...] = (("k", "int4", "INTEGER"), ("name", "text", "VARCHAR"))
DESCRIBED: dict[str, list[tuple[str, str]]] = {
    "public.t": [(n, pg) for n, pg, _ in T_COLUMNS],
    "public.e": [(n, pg) for n, pg, _ in E_COLUMNS],
    "public.p": [(n, pg) for n, pg, _ in P_COLUMNS],
}

# The public table: a duplicated join key (one private row joins two public rows), a NULL name,
# a NULL key and an extreme key.
P_ROWS: tuple[tuple[int | None, str | None], ...] = (
    (0, "n0"),
    (1, "n1"),
    (2, "n1"),
    (3, "n3"),
    (3, "n3dup"),
    (4, None),
    (None, "nnull"),
    (INT32_MAX, "nmax"),
)

SHAPES: dict[str, str] = {
    "count_star": "SELECT COUNT(*) FROM t",
    "count_col": "SELECT COUNT(x) FROM t",
    "count_literal_and_unit": "SELECT COUNT(1), COUNT(uid) FROM t",
    "count_distinct_unit": "SELECT COUNT(DISTINCT uid) FROM t",
    "sum_int": "SELECT SUM(a) FROM t",
    "sum_float": "SELECT SUM(x) FROM t",
    "sum_bounds_without_zero": "SELECT SUM(y) FROM t",
    "avg": "SELECT AVG(x) FROM t",
    "var_pop": "SELECT VAR_POP(x) FROM t",
    "var_samp": "SELECT VAR_SAMP(a) FROM t",
    "stddev": "SELECT STDDEV(y), STDDEV_POP(x), STDDEV_SAMP(a) FROM t",
    "many_aggregates": "SELECT COUNT(*), COUNT(y), SUM(x), AVG(a), VARIANCE(y), COUNT(DISTINCT uid) FROM t",
    "group_declared_values": "SELECT g, COUNT(*), SUM(x), AVG(y) FROM t GROUP BY g",
    "group_private": "SELECT h, COUNT(*), SUM(a) FROM t GROUP BY h",
    "group_private_units": "SELECT h, COUNT(DISTINCT uid) FROM t GROUP BY h",
    "group_two_columns": "SELECT g, h, COUNT(*), SUM(y) FROM t GROUP BY g, h",
    "group_case": "SELECT CASE WHEN x < 0 THEN 'neg' WHEN x < 10 THEN 'low' ELSE 'high' END AS b, COUNT(*), AVG(a) FROM t GROUP BY 1",
    "group_date_trunc": "SELECT date_trunc('month', d) AS m, COUNT(*), SUM(a) FROM t GROUP BY 1",
    "group_extract": "SELECT extract(year FROM d) AS yr, SUM(x) FROM t GROUP BY 1",
    "group_float_expression": "SELECT ROUND(x) AS r, COUNT(*) FROM t GROUP BY 1",
    "where_mixed": (
        "SELECT COUNT(*), SUM(x) FROM t WHERE a * 2 + 1 > 5 AND (CASE WHEN h = 'abc' THEN 1 ELSE 0 END) = 0 "
        "AND g IN ('a', 'b') AND x BETWEEN -1 AND 15 AND h LIKE 'h%'"
    ),
    "where_intdiv_mod": "SELECT g, COUNT(*) FROM t WHERE a / 3 = 1 OR a % 4 = 2 OR 100 / a > 20 OR k % 0 = 1 GROUP BY g",
    "join_public_group": "SELECT p.name, COUNT(*), SUM(t.a) FROM t JOIN p ON t.k = p.k GROUP BY p.name",
    "join_public_where": "SELECT COUNT(*), AVG(t.x) FROM t JOIN p ON t.k = p.k WHERE p.name = 'n1'",
    "cte_row_level": "WITH v AS (SELECT uid, x * 2 AS x2, g FROM t WHERE a > 2) SELECT g, SUM(x2), COUNT(*) FROM v GROUP BY g",
    "subquery_row_level": "SELECT s.g, AVG(s.z) FROM (SELECT g, CASE WHEN a > 5 THEN x ELSE 0 END AS z FROM t) AS s GROUP BY s.g",
    "sum_arithmetic": "SELECT SUM(x * 2 + 1) FROM t",
    "sum_case": "SELECT SUM(CASE WHEN a > 3 THEN x ELSE 0 END) FROM t",
    "sum_clamped": "SELECT SUM(LEAST(GREATEST(x, 0), 7)), SUM(LEAST(GREATEST(k, -2), 3)) FROM t",
    "filter": "SELECT g, COUNT(*) FILTER (WHERE x > 1), SUM(x) FILTER (WHERE a >= 5) FROM t GROUP BY g",
    "post_processing": "SELECT g, COUNT(*) AS n, SUM(x) FROM t GROUP BY g HAVING COUNT(*) > 3 ORDER BY n DESC LIMIT 2",
    "second_table_few_keys": "SELECT c, COUNT(*), SUM(v) FROM e GROUP BY c",
    "second_table_avg": "SELECT SUM(v), AVG(v) FROM e",
    "second_table_int_values": "SELECT w, COUNT(*), AVG(v) FROM e GROUP BY w",
    "select_distinct": "SELECT DISTINCT h FROM t",
    # COUNT/SUM(DISTINCT x): ≤ max_rows distinct values per (unit, group), chosen by a hash of (unit, value)
    "count_distinct_values": "SELECT COUNT(DISTINCT h), APPROX_COUNT_DISTINCT(d), SUM(DISTINCT a), COUNT(DISTINCT x) FROM t",
    "count_distinct_ranked": (
        "SELECT g, COUNT(DISTINCT h), SUM(DISTINCT y), COUNT(*), COUNT(DISTINCT uid) FILTER (WHERE a > 4) FROM t GROUP BY g"
    ),
    "count_distinct_private_keys": (
        "SELECT h, COUNT(DISTINCT a), SUM(DISTINCT x) FILTER (WHERE a > 2), COUNT(DISTINCT uid) FROM t GROUP BY h"
    ),
}

# More shapes (joins, mixed key sources, expressions), replayed on fewer generated databases.
EXTRA_SHAPES: dict[str, str] = {
    "left_join_public_first": "SELECT p.name, COUNT(t.x), SUM(t.a) FROM p LEFT JOIN t ON t.k = p.k GROUP BY p.name",
    "non_equi_join_group": "SELECT p.name, COUNT(*), AVG(t.y) FROM t JOIN p ON t.k <= p.k GROUP BY p.name",
    "join_public_subquery": (
        "SELECT q.name, COUNT(*) FROM t JOIN (SELECT k, upper(name) AS name FROM p WHERE k < 4) AS q ON t.k = q.k GROUP BY q.name"
    ),
    "public_and_private_keys": "SELECT p.name, t.h, SUM(t.y) FROM t JOIN p ON t.k = p.k GROUP BY p.name, t.h",
    "public_and_declared_keys": "SELECT p.name, t.g, COUNT(*) FROM t JOIN p ON t.k = p.k GROUP BY p.name, t.g",
    "group_public_expression": "SELECT p.k % 2 AS parity, COUNT(*) FROM t JOIN p ON t.k = p.k GROUP BY 1",
    "group_coalesce": "SELECT COALESCE(h, 'none') AS hh, COUNT(*) FROM t GROUP BY 1",
    "group_boolean": "SELECT x > 0 AS pos, COUNT(*), SUM(a) FROM t GROUP BY 1",
    "group_three_keys": "SELECT g, h, extract(year FROM d) AS yr, COUNT(*) FROM t GROUP BY 1, 2, 3",
    "count_filters_only": "SELECT COUNT(*) FILTER (WHERE g = 'a'), COUNT(*) FILTER (WHERE g = 'b') FROM t",
    "sum_integer_expressions": "SELECT SUM(a * a), SUM(a - 20), SUM(-a) FROM t",
    "avg_var_of_expressions": "SELECT AVG(CASE WHEN g = 'a' THEN y END), VAR_POP(y * 2) FROM t",
    "where_dates": (
        "SELECT COUNT(*) FROM t WHERE d >= DATE '2023-01-01' AND d + 30 < DATE '2024-01-01' AND extract(month FROM d) IN (1, 2, 3)"
    ),
    "where_casts_and_strings": (
        "SELECT COUNT(*), SUM(a) FROM t WHERE CAST(h AS INT) > 3 OR CAST(x AS INT) = 2 OR lower(h) = 'h1' "
        "OR length(h) > 2 OR substring(h, 2, 1) = '3' OR h || 'x' = 'h2x'"
    ),
    "nested_ctes": (
        "WITH a1 AS (SELECT uid, g, x FROM t WHERE x > 0), a2 AS (SELECT uid, g, x * 3 AS x3 FROM a1) SELECT g, SUM(x3) FROM a2 GROUP BY g"
    ),
    "ratio_of_aggregates": "SELECT g, SUM(x) / COUNT(*) AS ratio FROM t GROUP BY g",
    "stddev_by_private_key": "SELECT h, STDDEV(x), VAR_SAMP(y) FROM t GROUP BY h",
    "count_distinct_few_keys": "SELECT c, COUNT(DISTINCT v), SUM(DISTINCT v) FILTER (WHERE w > 1) FROM e GROUP BY c",
    "count_distinct_only_filters": (
        "SELECT COUNT(DISTINCT uid) FILTER (WHERE g = 'a'), COUNT(DISTINCT h) FILTER (WHERE a > 3), COUNT(DISTINCT k % 3) FROM t"
    ),
    "count_distinct_join_public": "SELECT p.name, COUNT(DISTINCT t.h) FROM t JOIN p ON t.k = p.k GROUP BY p.name",
    # public relations (rewriter/public_relations.py): a derived table / CTE over p only, its keys released in full
    "public_groups_right_join": "SELECT k, COUNT(*), SUM(t.a) FROM t RIGHT JOIN (SELECT DISTINCT k FROM p) AS q USING (k) GROUP BY k",
    "public_cte_grouped_fanout": (
        "WITH q AS (SELECT name, MIN(k) AS k FROM p GROUP BY name) "
        "SELECT q.name, COUNT(*), AVG(t.x) FROM t JOIN q ON t.k >= q.k GROUP BY q.name"
    ),
}

# Subqueries in WHERE (rewriter/subqueries.py): semi-/anti-joins on the unit over a private table
# (their bounded SQL reads two private relations, so the replay runs them directly per variant) and
# filters over the public table p (lifted like any shape).
SUBQUERY_SHAPES: dict[str, str] = {
    "semi_in_unit": "SELECT t.g, COUNT(*), SUM(t.x) FROM t WHERE t.uid IN (SELECT e.uid FROM e WHERE e.v > 0) GROUP BY t.g",
    "anti_not_in_unit": "SELECT COUNT(*), AVG(t.a) FROM t WHERE t.uid NOT IN (SELECT e.uid FROM e WHERE e.c = 'x')",
    "semi_exists_unit": "SELECT t.h, COUNT(*) FROM t WHERE EXISTS (SELECT 1 FROM e WHERE e.uid = t.uid AND e.w = 2) GROUP BY t.h",
    "anti_not_exists_unit": (
        "SELECT e.c, COUNT(*), SUM(e.v) FROM e WHERE NOT EXISTS (SELECT 1 FROM t WHERE t.uid = e.uid AND t.x > 10) GROUP BY e.c"
    ),
    "self_semi_join": "SELECT COUNT(*), SUM(x) FROM t WHERE uid IN (SELECT uid FROM t WHERE a > 5)",
    "public_in": "SELECT g, COUNT(*), SUM(a) FROM t WHERE k IN (SELECT k FROM p WHERE name <> 'n1') GROUP BY g",
    "public_not_exists_correlated": "SELECT COUNT(*), SUM(y) FROM t WHERE NOT EXISTS (SELECT 1 FROM p WHERE p.k = t.k AND p.k > 2)",
    "public_scalar": "SELECT g, COUNT(*) FROM t WHERE k > (SELECT MIN(k) FROM p) GROUP BY g",
}

# Queries whose bounded SQL must equal another's, up to the per-query hash salt (post-processing
# clauses never reach the engine).
POST_PROCESSING_TWINS: dict[str, str] = {
    "SELECT g, COUNT(*) AS n, SUM(x) FROM t GROUP BY g HAVING COUNT(*) > 3 ORDER BY n DESC LIMIT 2": (
        "SELECT g, COUNT(*) AS n, SUM(x) FROM t GROUP BY g"
    ),
    "SELECT h, COUNT(*) FROM t GROUP BY h ORDER BY 2 DESC LIMIT 1": "SELECT h, COUNT(*) FROM t GROUP BY h",
    "SELECT COUNT(*) AS n, SUM(a) FROM t HAVING SUM(a) > 0": "SELECT COUNT(*) AS n, SUM(a) FROM t",
}


@cache
def policy() -> Policy:
    """The replay policy."""
    return policy_from_dict(POLICY, "/nonexistent/replay-policy.toml")


@cache
def catalog() -> Catalog:
    """The replay policy's visible schema (no data source needed)."""
    return build_catalog(policy(), DESCRIBED)


@cache
def rewritten(sql: str, dialect: str = "duckdb") -> Rewrite:
    """``rewrite(sql)`` against the replay catalog, cached (rewriting is pure)."""
    return rewrite(sql, catalog(), dialect=dialect)


# ------------------------------------------------------------------------------------ databases

TRow = tuple[Any, ...]  # uid, a, x, y, g, h, d (date text or None), k
ERow = tuple[Any, ...]  # uid, v, c, w

A_SPECIAL: tuple[int | None, ...] = (None, 0, 10, -1, 11, INT64_MAX, INT64_MIN, INT64_MIN + 1, 2**53 + 1, -100, 10**12)
X_SPECIAL: tuple[float | None, ...] = (
    None, math.nan, math.inf, -math.inf, -0.0, 0.0, 1e308, -1e308, 5e-324, -5.0, 20.0,
    20.000001, -5.000001, 1e15, float(2**53), -1e-300,
)  # fmt: skip
Y_SPECIAL: tuple[float | None, ...] = (None, math.nan, math.inf, -math.inf, -0.0, 0.0, 2.0, 5.0, 1.9999, 5.0001, 1e308, -1e308)
G_SPECIAL: tuple[str | None, ...] = (None, "", "d", "A", "a ", "abc", "é")
H_SPECIAL: tuple[str | None, ...] = (None, "", "abc", "h'q", "%", "_", "x" * 300, "NULL", "ħ")
D_SPECIAL: tuple[str | None, ...] = (
    None, "294247-01-10", "5881580-07-10", "5877642-06-25 (BC)", "infinity", "-infinity",
    "0001-01-01", "1970-01-01", "9999-12-31",
)  # fmt: skip
K_SPECIAL: tuple[int | None, ...] = (None, -1, INT32_MAX, INT32_MIN, 3)
V_SPECIAL: tuple[int | None, ...] = (None, 0, -3, 7, -4, 8, INT32_MAX, INT32_MIN)
C_SPECIAL: tuple[str | None, ...] = (None, "", "z", "X")
W_SPECIAL: tuple[int | None, ...] = (None, 0, 4, -1, INT32_MAX)
PROFILES = ("normal", "normal", "normal", "high", "low", "spread", "special")
_EPOCH = dt.date(2022, 1, 1)


@dataclass(frozen=True)
class DB:
    """One database: rows of the private tables ``t`` and ``e`` (the public ``p`` is fixed)."""

    name: str
    t: tuple[TRow, ...]
    e: tuple[ERow, ...] = ()

    def units(self) -> list[int]:
        """Distinct non-NULL units, heaviest (most rows over both tables) first, then by value."""
        weight: dict[int, int] = {}
        for r in (*self.t, *self.e):
            if r[0] is not None:
                weight[r[0]] = weight.get(r[0], 0) + 1
        return sorted(weight, key=lambda u: (-weight[u], u))


@dataclass(frozen=True)
class DBSpec:
    """What Hypothesis draws for one database; :func:`materialize` turns it into rows."""

    rows_per_unit: tuple[int, ...]  # rows in t of each unit (its length is the number of units)
    seed: int  # seeds the values (and the e rows) deterministically
    p_special: float  # probability that a value comes from the special-value palette
    h_pool: int  # number of distinct ordinary h values (small: shared keys; large: one-unit keys)
    wide_uids: bool  # unit ids spread over int64 (including its extremes) instead of 0..n-1
    null_uid_rows: int  # rows whose unit is NULL (belong to no unit)


def materialize(spec: DBSpec, name: str = "generated") -> DB:
    """The rows of ``spec``: per-unit profiles (normal, at/over the upper bounds, at/under the
    lower bounds, spread over many groups, special values) mixed with special values."""
    rng = random.Random(spec.seed)
    n = len(spec.rows_per_unit)
    if spec.wide_uids:
        pool = {INT64_MAX, INT64_MIN, 0, -1}
        while len(pool) < n:
            pool.add(rng.randint(INT64_MIN, INT64_MAX))
        uids: list[int | None] = rng.sample(sorted(pool), n)
    else:
        uids = rng.sample(range(n), n)
    t: list[TRow] = []
    e: list[ERow] = []
    for uid, count in zip(uids, spec.rows_per_unit, strict=True):
        profile = rng.choice(PROFILES)
        t.extend(_t_row(rng, uid, profile, spec) for _ in range(count))
        e.extend(_e_row(rng, uid, profile, spec) for _ in range(rng.choice((0, 0, 1, 1, 2, 3))))
    for _ in range(spec.null_uid_rows):
        t.append(_t_row(rng, None, "normal", spec))
        e.append(_e_row(rng, None, "normal", spec))
    rng.shuffle(t)
    rng.shuffle(e)
    return DB(name, tuple(t), tuple(e))


POISON_UID = 4242


def poison_unit() -> tuple[tuple[TRow, ...], tuple[ERow, ...]]:
    """Rows of one *poison* unit (T7): one poisoned column per row, then rows with every column
    poisoned — 0, −1, ±2^63, NaN, ±inf, ±1e308, 'abc', '', '1e999', huge and infinite dates …"""
    base: TRow = (POISON_UID, 5, 1.0, 3.0, "a", "h1", "2023-05-17", 1)
    poison: dict[int, tuple[object, ...]] = {
        1: (0, -1, INT64_MAX, INT64_MIN, INT64_MIN + 1, None),
        2: (0.0, -0.0, math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, None),
        3: (0.0, math.nan, math.inf, -1e308, None),
        4: ("abc", "", "d", None),
        5: ("abc", "", "true", "1", "1e999", "2023-13-45", "x" * 300, "'", "\\", "%", "é", "a\\", None),
        6: ("294247-01-10", "5881580-07-10", "5877642-06-25 (BC)", "infinity", "-infinity", "0001-01-01", None),
        7: (0, INT32_MAX, INT32_MIN, -1, None),
    }
    rows: list[TRow] = []
    for col, values in poison.items():
        for v in values:
            row = list(base)
            row[col] = v
            rows.append(tuple(row))
    width = max(len(v) for v in poison.values())
    for i in range(width):
        rows.append((POISON_UID, *(poison[c][i % len(poison[c])] for c in range(1, 8))))
    e_rows = tuple(
        (POISON_UID, v, c, w) for v, c, w in zip((0, INT32_MAX, INT32_MIN, None), ("abc", "", None, "x"), (0, 4, None, 1), strict=True)
    )
    return tuple(rows), e_rows


def poison_databases() -> dict[str, DB]:
    """T7's databases: empty and ordinary, each with and without the poison unit."""
    poison_t, poison_e = poison_unit()
    ordinary = materialize(DBSpec(tuple([3, 5, 1, 8, 2] * 4), seed=7, p_special=0.0, h_pool=6, wide_uids=False, null_uid_rows=1))
    return {
        "empty": DB("empty", ()),
        "poison": DB("poison", poison_t, poison_e),
        "ordinary": ordinary,
        "ordinary+poison": DB("ordinary+poison", ordinary.t + poison_t, ordinary.e + poison_e),
    }


def _pick(rng: random.Random, p: float, special: Sequence[Any], normal: Any) -> Any:
    return rng.choice(special) if rng.random() < p else normal


def _t_row(rng: random.Random, uid: int | None, profile: str, spec: DBSpec) -> TRow:
    p = 1.0 if profile == "special" else spec.p_special
    if profile == "high":
        a = rng.choice((10, 11, INT64_MAX))
        x = rng.choice((20.0, 1e308, math.inf))
        y = rng.choice((5.0, 6.0, math.inf))
    elif profile == "low":
        a = rng.choice((0, -1, INT64_MIN))
        x = rng.choice((-5.0, -1e308, -math.inf))
        y = rng.choice((2.0, 0.0, -math.inf, -0.0))
    else:
        a = _pick(rng, p, A_SPECIAL, rng.randint(0, 10))
        x = _pick(rng, p, X_SPECIAL, rng.uniform(-8, 24))
        y = _pick(rng, p, Y_SPECIAL, rng.uniform(1.5, 5.5))
    h_pool = 40 if profile == "spread" else spec.h_pool
    g = _pick(rng, p, G_SPECIAL, rng.choice("abc"))
    h = _pick(rng, p, H_SPECIAL, f"h{rng.randrange(h_pool)}")
    day = _EPOCH + dt.timedelta(days=rng.randrange(1096))
    d = _pick(rng, p, D_SPECIAL, day.isoformat())
    k = _pick(rng, p, K_SPECIAL, rng.randint(0, 5))
    return (uid, a, x, y, g, h, d, k)


def _e_row(rng: random.Random, uid: int | None, profile: str, spec: DBSpec) -> ERow:
    p = 1.0 if profile == "special" else spec.p_special
    v = {"high": 7, "low": -3}.get(profile, rng.randint(-4, 8))
    return (uid, _pick(rng, p, V_SPECIAL, v), _pick(rng, p, C_SPECIAL, rng.choice("xy")), _pick(rng, p, W_SPECIAL, rng.randint(1, 3)))


# -------------------------------------------------------------------------------------- loading


def _column_arrays(name: str, duck_type: str, values: Sequence[Any]) -> dict[str, np.ndarray]:
    """numpy arrays that DuckDB scans losslessly: a value array plus a kind array (NULL, NaN)."""
    kind = np.array([1 if v is None else 2 if isinstance(v, float) and math.isnan(v) else 0 for v in values], dtype=np.int8)
    if duck_type in ("BIGINT", "INTEGER"):
        vals = np.array([0 if v is None else v for v in values], dtype=np.int64)
    elif duck_type == "DOUBLE":
        vals = np.array([0.0 if v is None or math.isnan(v) else v for v in values], dtype=np.float64)
    else:  # VARCHAR, DATE (as text)
        vals = np.array(["" if v is None else v for v in values], dtype=object)
    return {f"{name}__v": vals, f"{name}__k": kind}


def _load(con: duckdb.DuckDBPyConnection, table: str, columns: Sequence[tuple[str, str, str]], rows: Sequence[tuple[Any, ...]],
          db_ids: Sequence[int]) -> None:
    """CREATE TABLE ``table`` (db INTEGER, columns…) from Python rows; NULL, NaN and ±0.0 kept exactly."""
    arrays: dict[str, np.ndarray] = {"db": np.array(db_ids, dtype=np.int32)}
    for i, (name, _, duck) in enumerate(columns):
        arrays |= _column_arrays(name, duck, [r[i] for r in rows])
    parts = ["db"]
    for name, _, duck in columns:
        nan = "WHEN 2 THEN CAST('nan' AS DOUBLE) " if duck == "DOUBLE" else ""
        parts.append(f"CASE {name}__k WHEN 1 THEN NULL {nan}ELSE CAST({name}__v AS {duck}) END AS {name}")
    view = f"__src_{table}"
    con.register(view, arrays)
    if rows:
        con.execute(f"CREATE TABLE {table} AS SELECT {', '.join(parts)} FROM {view}")
    else:
        cols = ", ".join(f"{n} {duck}" for n, _, duck in columns)
        con.execute(f"CREATE TABLE {table} (db INTEGER, {cols})")
    con.unregister(view)


# -------------------------------------------------------------------------------------- lifting


class LiftError(Exception):
    """The bounded SQL has a structure :func:`lift` does not know; run it directly instead."""


PRIVATE_TABLES = {"t": "t_stack", "e": "e_stack"}


def lift(sql: str) -> str:
    """The bounded SQL over the stacked variants: ``__dp_rep`` added to every layer's projection,
    GROUP BY and PARTITION BY; the private tables replaced by their stacks (see module docstring).
    """
    tree = sqlglot.parse_one(sql, read="duckdb")
    if not isinstance(tree, exp.Select):
        raise LiftError("not a SELECT")
    with_ = tree.args.get("with_")
    ctes = list(with_.expressions) if isinstance(with_, exp.With) else []
    lifted: set[str] = set()
    bodies: list[tuple[str | None, exp.Select]] = []
    for cte in ctes:
        bodies.append((cte.alias_or_name, _branches(cte.this)))
    bodies.append((None, [tree]))
    private_reads = 0
    for name, branches in bodies:
        any_lifted = False
        for body in branches:
            rep = _lift_sources(body, lifted)
            if rep is None:
                continue
            any_lifted = True
            if isinstance(rep, exp.Column) and rep.name == "__rep":
                private_reads += 1
            _lift_select(body, rep)
            _lift_in_subqueries(body, rep, lifted)
        if any_lifted and len(branches) > 1 and not all(
            any(isinstance(p, exp.Alias) and p.alias == "__dp_rep" for p in b.expressions) for b in branches
        ):
            raise LiftError("a UNION mixes lifted and unlifted branches")
        if name is not None and any_lifted:
            lifted.add(name)
    if private_reads != 1:
        raise LiftError(f"expected one read of a private table, found {private_reads}")
    for node in tree.walk():
        if isinstance(node, exp.Table) and node.name in PRIVATE_TABLES and node.args.get("db") is not None:
            raise LiftError("a private table is read outside FROM/JOIN of a layer")
    return tree.sql("duckdb")


def _branches(node: exp.Expression) -> list[exp.Select]:
    """The SELECT branches of a CTE body: itself, or every branch of a UNION ALL."""
    if isinstance(node, exp.Select):
        return [node]
    if isinstance(node, exp.Union) and not node.args.get("distinct"):
        return _branches(node.this) + _branches(node.expression)
    raise LiftError("a CTE is not a plain SELECT or UNION ALL")


def _lift_sources(body: exp.Select, lifted: set[str]) -> exp.Column | None:
    """Point a private table at its stack; return the expression of the layer's variant id.

    A layer joining two lifted CTEs (the COUNT(DISTINCT) chains join ``__dp_ranked``) gets
    ``a.__dp_rep = b.__dp_rep`` added to the join's ON: only rows of one variant meet."""
    sources: list[tuple[exp.Expression, exp.Join | None]] = []
    if body.args.get("from_") is not None:
        sources.append((body.args["from_"].this, None))
    sources += [(j.this, j) for j in body.args.get("joins") or []]
    reps: list[tuple[exp.Column, exp.Join | None, bool]] = []
    for src, join in sources:
        if isinstance(src, exp.Table):
            if src.args.get("db") is not None and src.db == "main" and src.name in PRIVATE_TABLES:
                src.set("this", exp.to_identifier(PRIVATE_TABLES[src.name], quoted=True))
                reps.append((exp.column("__rep", table=src.alias_or_name, quoted=True), join, True))
            elif src.args.get("db") is None and src.name in lifted:
                reps.append((exp.column("__dp_rep", table=src.alias or None), join, False))
        elif src.find(exp.Table) is not None and any(t.name in set(PRIVATE_TABLES) | lifted for t in src.find_all(exp.Table)):
            raise LiftError("a private relation is read through a subquery")
    if len(reps) > 1:
        if any(private for _, _, private in reps) or any(r.table == "" for r, _, _ in reps):
            raise LiftError("a layer reads two private relations")
        first = reps[0][0]
        for rep, join, _ in reps[1:]:
            assert join is not None
            same = exp.EQ(this=first.copy(), expression=rep.copy())
            on = join.args.get("on")
            join.set("on", exp.and_(on, same) if on is not None else same)
    return reps[0][0] if reps else None


def _lift_select(body: exp.Select, rep: exp.Column) -> None:
    star = any(isinstance(p, exp.Star) for p in body.expressions)
    if not (star and rep.name == "__dp_rep"):  # SELECT * over a lifted layer already carries it
        body.select(exp.alias_(rep.copy(), "__dp_rep"), copy=False)
    group = body.args.get("group")
    if group is not None:
        group.append("expressions", rep.copy())
    elif any(_aggregate_outside_window(p) for p in body.expressions):
        body.group_by(rep.copy(), copy=False)
    for window in body.find_all(exp.Window):
        if window.find_ancestor(exp.Select) is not body:
            continue
        parts = list(window.args.get("partition_by") or [])
        window.set("partition_by", [*parts, rep.copy()])


def _lift_in_subqueries(body: exp.Select, rep: exp.Column, lifted: set[str]) -> None:
    """``x IN (SELECT y FROM lifted …)`` → ``(x, rep) IN (SELECT y, __dp_rep FROM lifted …)``: the
    row cap's light/heavy unit lists are per variant (unit ids repeat across the stacked databases)."""
    for node in list(body.find_all(exp.In)):
        query = node.args.get("query")
        if query is None or node.find_ancestor(exp.Select) is not body:
            continue
        sub = query.this if isinstance(query, exp.Subquery) else query
        if not isinstance(sub, exp.Select):
            raise LiftError("an IN subquery is not a plain SELECT")
        src = sub.args.get("from_")
        if src is None or not isinstance(src.this, exp.Table) or src.this.name not in lifted or sub.args.get("joins"):
            if any(t.name in lifted or t.name in PRIVATE_TABLES for t in sub.find_all(exp.Table)):
                raise LiftError("an IN subquery reads a private relation in a way the lifting does not know")
            continue
        sub.select(exp.column("__dp_rep"), copy=False)
        node.set("this", exp.Tuple(expressions=[node.this.copy(), rep.copy()]))


def _aggregate_outside_window(node: exp.Expression) -> bool:
    return any(a.find_ancestor(exp.Window) is None for a in node.find_all(exp.AggFunc))


# ---------------------------------------------------------------------------------------- replay

Key = tuple[Any, ...]
Cells = dict[Key, tuple[int, ...]]


def keyed(sql: str, plan: ReleasePlan) -> str:
    """``sql`` wrapped so that each key column comes back as DuckDB's text of the value: Python
    conversion would merge values a client tells apart (DuckDB's −infinity timestamp and
    0001-01-01 both become ``datetime.min``; −0.0 == 0.0)."""
    if not plan.keys:
        return sql
    repl = ", ".join(f"CAST({k.column} AS VARCHAR) AS {k.column}" for k in plan.keys)
    return f"SELECT * REPLACE ({repl}) FROM ({sql}) AS __keyed"


@dataclass(frozen=True)
class Variant:
    """One stacked database: ``kind`` is "full" (D), "minus" (D without unit u) or "only" (u's rows)."""

    rep: int
    db: int
    kind: str
    unit: int | None = None


@dataclass
class Stack:
    """A batch of databases loaded into one DuckDB with every variant stacked."""

    con: duckdb.DuckDBPyConnection
    dbs: list[DB]
    variants: list[Variant]
    removals: dict[int, list[tuple[int, int, int]]] = field(default_factory=dict)  # db -> [(unit, rep minus, rep only)]
    full: dict[int, int] = field(default_factory=dict)  # db -> rep of D
    empty_rep: int = -1  # a variant id with no rows

    def close(self) -> None:
        """Close the DuckDB connection."""
        self.con.close()


def build_stack(dbs: Sequence[DB], *, max_removals: int = 50, threads: int = 2) -> Stack:
    """Load ``dbs`` and stack, per database, D, and for each of up to ``max_removals`` units
    (the heaviest first) D minus the unit and the unit's rows alone."""
    con = duckdb.connect(":memory:", config={"threads": threads})
    stack = Stack(con, list(dbs), [])
    t_rows: list[TRow] = []
    e_rows: list[ERow] = []
    t_db: list[int] = []
    e_db: list[int] = []
    rep = 0
    for i, db in enumerate(dbs):
        t_rows += db.t
        e_rows += db.e
        t_db += [i] * len(db.t)
        e_db += [i] * len(db.e)
        stack.variants.append(Variant(rep, i, "full"))
        stack.full[i] = rep
        rep += 1
        units = db.units()
        chosen = units[:1] + random.Random(i).sample(units[1:], min(len(units) - 1, max_removals - 1)) if units and max_removals else []
        stack.removals[i] = []
        for u in chosen:
            stack.variants.append(Variant(rep, i, "minus", u))
            stack.variants.append(Variant(rep + 1, i, "only", u))
            stack.removals[i].append((u, rep, rep + 1))
            rep += 2
    _load(con, "t_base", T_COLUMNS, t_rows, t_db)
    _load(con, "e_base", E_COLUMNS, e_rows, e_db)
    con.execute("CREATE TABLE main.p (k INTEGER, name VARCHAR)")
    con.executemany("INSERT INTO main.p VALUES (?, ?)", [list(r) for r in P_ROWS])
    v = stack.variants
    con.register(
        "__variants",
        {
            "rep": np.array([x.rep for x in v], dtype=np.int32),
            "db": np.array([x.db for x in v], dtype=np.int32),
            "kind": np.array([("full", "minus", "only").index(x.kind) for x in v], dtype=np.int8),
            "u": np.array([x.unit or 0 for x in v], dtype=np.int64),
        },
    )
    con.execute("CREATE TABLE variants AS SELECT * FROM __variants")
    con.unregister("__variants")
    for base, stacked in (("t_base", "t_stack"), ("e_base", "e_stack")):
        con.execute(
            f"CREATE TABLE main.{stacked} AS SELECT v.rep AS __rep, b.* EXCLUDE (db) FROM {base} b JOIN variants v ON b.db = v.db "
            "AND (v.kind = 0 OR (v.kind = 1 AND b.uid IS DISTINCT FROM v.u) OR (v.kind = 2 AND b.uid = v.u))"
        )
    show(stack, stack.full[0] if dbs else -1)
    return stack


def connect_db(db: DB, *, threads: int = 1) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB holding ``db`` as the tables ``main.t``, ``main.e`` and ``main.p``."""
    con = duckdb.connect(":memory:", config={"threads": threads})
    _load(con, "t_base", T_COLUMNS, db.t, [0] * len(db.t))
    _load(con, "e_base", E_COLUMNS, db.e, [0] * len(db.e))
    con.execute("CREATE TABLE main.t AS SELECT * EXCLUDE (db) FROM t_base")
    con.execute("CREATE TABLE main.e AS SELECT * EXCLUDE (db) FROM e_base")
    con.execute("DROP TABLE t_base")
    con.execute("DROP TABLE e_base")
    con.execute("CREATE TABLE main.p (k INTEGER, name VARCHAR)")
    con.executemany("INSERT INTO main.p VALUES (?, ?)", [list(r) for r in P_ROWS])
    return con


def show(stack: Stack, rep: int) -> None:
    """Point the private tables ``main.t`` and ``main.e`` at one variant (for direct execution)."""
    for name in ("t", "e"):
        stack.con.execute(f"CREATE OR REPLACE VIEW main.{name} AS SELECT * EXCLUDE (__rep) FROM main.{name}_stack WHERE __rep = {rep}")


def _columns(plan: ReleasePlan) -> tuple[list[str], list[str]]:
    return [k.column for k in plan.keys], [s.column for s in plan.stats]


def cells_of(columns: Sequence[str], rows: Iterable[tuple[Any, ...]], plan: ReleasePlan, problems: list[str], where: str) -> Cells:
    """Bounded-result rows as group key → exact statistics; non-integer cells are reported."""
    keys, stats = _columns(plan)
    index = {c: i for i, c in enumerate(columns)}
    missing = [c for c in (*keys, *stats) if c not in index]
    if missing:
        raise AssertionError(f"{where}: bounded result lacks columns {missing}; it has {list(columns)}")
    out: Cells = {}
    for r in rows:
        key = tuple(r[index[k]] for k in keys)
        values = []
        for s in stats:
            v = r[index[s]]
            if v is None or not isinstance(v, int):
                problems.append(f"{where}: statistic {s} of group {key} is {v!r}, not an exact integer (R17)")
                v = 0
            values.append(v)
        if key in out:
            problems.append(f"{where}: group {key} appears twice in the bounded result")
        out[key] = tuple(values)
    return out


def run_direct(stack: Stack, rw: Rewrite, rep: int, problems: list[str], where: str) -> Cells:
    """The bounded SQL, unmodified, on one variant."""
    assert rw.plan is not None
    show(stack, rep)
    cur = stack.con.execute(keyed(rw.sql, rw.plan))
    cols = [d[0] for d in cur.description]
    return cells_of(cols, cur.fetchall(), rw.plan, problems, where)


def lifted_rows(stack: Stack, rw: Rewrite) -> tuple[list[str], list[tuple[Any, ...]]] | None:
    """Columns and rows of the lifted bounded SQL over every variant, on a cursor of its own (so
    several shapes can run at once); None when the SQL cannot be lifted."""
    assert rw.plan is not None
    try:
        sql = keyed(lift(rw.sql), rw.plan)
    except LiftError:
        return None
    cur = stack.con.cursor()
    try:
        cur.execute(sql)
        return [d[0] for d in cur.description], cur.fetchall()
    finally:
        cur.close()


def run_lifted(
    stack: Stack,
    rw: Rewrite,
    problems: list[str],
    where: str,
    empty: Cells | None,
    fetched: tuple[list[str], list[tuple[Any, ...]]] | None = None,
) -> dict[int, Cells]:
    """The bounded SQL over every variant at once: rep → cells (a global aggregate's rep with no
    row gets ``empty``, the unmodified SQL's answer on an empty database)."""
    assert rw.plan is not None
    if fetched is None:
        fetched = lifted_rows(stack, rw)
    if fetched is None:  # unknown structure: fall back to one direct run per variant
        return {v.rep: run_direct(stack, rw, v.rep, problems, f"{where}/rep{v.rep}") for v in stack.variants}
    cols, all_rows = fetched
    rep_i = cols.index("__dp_rep")
    by_rep: dict[int, list[tuple[Any, ...]]] = {v.rep: [] for v in stack.variants}
    for r in all_rows:
        by_rep[r[rep_i]].append(r)
    out: dict[int, Cells] = {}
    for rep, rows in by_rep.items():
        cells = cells_of(cols, rows, rw.plan, problems, f"{where}/rep{rep}")
        if not rw.plan.keys and not rows:
            assert empty is not None
            cells = dict(empty)
        out[rep] = cells
    return out


def check_neighbours(plan: ReleasePlan, full: Cells, minus: Cells, only: Cells, where: str) -> list[str]:
    """Every way removing one unit may change the bounded result, checked against the plan."""
    problems: list[str] = []
    _, stats = _columns(plan)
    l0 = plan.max_groups
    k = plan.max_contributions
    if k is not None:  # the row cap: a unit keeps ≤ k rows, so it touches ≤ k groups
        l0 = min(l0, k)
    zero = (0,) * len(stats)
    groups = set(full) | set(minus)
    changed_any = {g for g in groups if full.get(g, zero) != minus.get(g, zero)}
    if len(changed_any) > l0:
        problems.append(f"{where}: {len(changed_any)} groups changed, more than L0 = {l0}")
    for j, s in enumerate(plan.stats):
        linf = s.max_contribution
        deltas = {g: abs(full.get(g, zero)[j] - minus.get(g, zero)[j]) for g in groups}
        deltas = {g: d for g, d in deltas.items() if d}
        worst = max(deltas.items(), key=lambda kv: kv[1], default=None)
        if worst is not None and worst[1] > linf:
            problems.append(f"{where}: {s.column} ({s.kind}) changed by {worst[1]} in group {worst[0]}, more than L∞ = {linf}")
        if s.kind == "units" and any(d > 1 for d in deltas.values()):
            problems.append(f"{where}: the distinct-unit count {s.column} changed by more than 1")
        if len(deltas) > l0:
            problems.append(f"{where}: {s.column} changed in {len(deltas)} groups, more than L0 = {l0}")
        l1, l2 = sum(deltas.values()), math.sqrt(sum(d * d for d in deltas.values()))
        if l1 > l0 * linf:
            problems.append(f"{where}: {s.column} ‖Δ‖₁ = {l1} > L0·L∞ = {l0 * linf}")
        if l2 > math.sqrt(l0) * linf * (1 + 1e-12):
            problems.append(f"{where}: {s.column} ‖Δ‖₂ = {l2} > √L0·L∞ = {math.sqrt(l0) * linf}")
        if k is not None and s.l1 is not None:  # the declared L1 bound and the L1/L2 norms it implies (exact)
            n1, n2sq = sensitivity_norms(l0, linf, s.l1)
            if l1 > n1:
                problems.append(f"{where}: {s.column} ‖Δ‖₁ = {l1} > the declared L1 bound {n1} (max_contributions)")
            if sum(d * d for d in deltas.values()) > n2sq:
                problems.append(f"{where}: {s.column} ‖Δ‖₂² = {sum(d * d for d in deltas.values())} > {n2sq} (max_contributions)")
    outside = changed_any - set(only)
    if outside:
        problems.append(f"{where}: groups {sorted(outside)[:3]} changed although the removed unit contributes none of them")
    appeared = set(full) ^ set(minus)
    foreign = appeared - set(only)
    if foreign:
        problems.append(f"{where}: key set changed in {sorted(foreign)[:3]}, which the removed unit has no rows in")
    return problems


_EMPTY: dict[str, Cells] = {}  # bounded SQL of a global aggregate -> its result on an empty database


@dataclass
class Report:
    """What one replay found: violations and how much it checked."""

    problems: list[str] = field(default_factory=list)
    neighbour_checks: int = 0
    direct_checks: int = 0


def replay(
    dbs: Sequence[DB],
    shapes: Mapping[str, Rewrite],
    *,
    max_removals: int = 50,
    verify: Sequence[int] = (0,),
    stack: Stack | None = None,
) -> Report:
    """Replay every shape on every database of ``dbs`` and its unit-removal neighbours.

    ``verify`` lists the databases (indexes) on which the lifted results for D and for D minus
    the heaviest unit are compared with direct execution of the unmodified bounded SQL.
    """
    own = stack is None
    st = stack or build_stack(dbs, max_removals=max_removals)
    report = Report()
    try:
        with ThreadPoolExecutor(2) as pool:  # two shapes at a time: DuckDB releases the GIL
            fetched = dict(zip(shapes, pool.map(lambda rw: lifted_rows(st, rw), shapes.values()), strict=True))
        for name, rw in shapes.items():
            assert rw.plan is not None, name
            empty = None
            if not rw.plan.keys:
                empty = _EMPTY.get(rw.sql)
                if empty is None:
                    empty = _EMPTY[rw.sql] = run_direct(st, rw, st.empty_rep, report.problems, f"{name}/empty")
                if set(empty) != {()}:
                    report.problems.append(f"{name}: a global aggregate on an empty database returned {len(empty)} rows, not 1")
            results = run_lifted(st, rw, report.problems, name, empty, fetched.pop(name))
            for i in verify:
                if i >= len(st.dbs):
                    continue
                reps = [st.full[i]] + [m for _, m, _ in st.removals[i][:1]]
                for rep in reps:
                    direct = run_direct(st, rw, rep, report.problems, f"{name}/{st.dbs[i].name}/rep{rep}/direct")
                    report.direct_checks += 1
                    if direct != results[rep]:
                        diff = sorted(set(direct.items()) ^ set(results[rep].items()), key=repr)[:4]
                        report.problems.append(f"{name}/{st.dbs[i].name}: lifted and direct execution differ on rep {rep}: {diff}")
            for i, db in enumerate(st.dbs):
                full = results[st.full[i]]
                for u, minus_rep, only_rep in st.removals[i]:
                    where = f"{name}/{db.name}/without unit {u}"
                    report.problems += check_neighbours(rw.plan, full, results[minus_rep], results[only_rep], where)
                    report.neighbour_checks += 1
    finally:
        if own:
            st.close()
    return report


def all_shapes(shapes: Mapping[str, str] = SHAPES) -> dict[str, Rewrite]:
    """Every shape of ``shapes`` (default :data:`SHAPES`), rewritten for DuckDB."""
    return {name: rewritten(sql) for name, sql in shapes.items()}
