"""T1 sensitivity replay for quantiles and MIN/MAX (security.md §4): every bounded histogram query
the rewriter emits, run on D and on D minus one privacy unit (every unit in turn, including a heavy
unit with 10⁴ rows in every group and values at, beyond and outside the bounds, NULL and NaN),
changes at most ``plan.max_groups`` groups' histograms, each by at most ``max_rows`` values (L1
over the candidates) — the sensitivity the DP selection is calibrated to."""

from __future__ import annotations

import datetime as dt
import math
import random
import zlib
from collections import Counter

import duckdb
import pandas as pd
import pytest

from dpsql.policy import policy_from_dict
from dpsql.rewriter import rewrite
from dpsql.schema import build_catalog

MAX_ROWS, MAX_GROUPS = 3, 2
POLICY = {
    "server": {"auth": "trust"},
    "budget": {"epsilon": 10, "delta": 1e-6},
    "users": {"a": {}},
    "tables": {
        "t": {
            "privacy_unit": "uid",
            "max_rows": MAX_ROWS,
            "max_groups": MAX_GROUPS,
            "columns": {
                "x": {"lower": -5.0, "upper": 20.0},
                "a": {"lower": 0, "upper": 10},
                "g": {"values": ["a", "b", "c"]},
                "h": {},
                "d": {"lower": dt.date(2022, 1, 1), "upper": dt.date(2023, 12, 31)},
            },
        }
    },
}
SCHEMA = {"public.t": [("uid", "int4"), ("x", "float8"), ("a", "int4"), ("g", "text"), ("h", "text"), ("d", "date")]}

SHAPES = [
    "SELECT MEDIAN(x) FROM t",
    "SELECT MIN(x), MAX(a) FROM t WHERE a > 2",
    "SELECT h, PERCENTILE_CONT(0.9) WITHIN GROUP (ORDER BY x) FROM t GROUP BY h",
    "SELECT g, PERCENTILE_DISC(0.25) WITHIN GROUP (ORDER BY a DESC), COUNT(*) FROM t GROUP BY g",
    "SELECT h, MIN(d), MAX(d) FROM t GROUP BY h",
    "SELECT g, h, QUANTILE_CONT(x * 2 + a, 0.5) FROM t GROUP BY g, h",
    "SELECT h, MEDIAN(x) FILTER (WHERE a < 5) FROM t GROUP BY h",
]


def _rows(rng: random.Random, heavy: bool) -> list[tuple]:
    out = []
    for u in range(rng.randrange(1, 9)):
        for _ in range(rng.randrange(0, 10)):
            out.append((
                u,
                rng.choice([None, math.nan, math.inf, -1e300, rng.uniform(-8, 25), float(rng.randrange(-5, 21))]),
                rng.choice([None, rng.randrange(-3, 14)]),
                rng.choice("abcd"),
                rng.choice(["h0", "h1", "h2", "h3", None]),
                rng.choice([None, dt.date(2021, 1, 1), dt.date(2022, 1, 1) + dt.timedelta(days=rng.randrange(0, 800))]),
            ))
    if heavy:
        out += [(99, float(i % 30 - 5), i % 11, "abc"[i % 3], f"h{i % 4}", dt.date(2022, 1, 1) + dt.timedelta(days=i % 730))
                for i in range(10_000)]
        out += [(None, 1.0, 1, "a", "h0", dt.date(2022, 5, 5))] * 3
    return out


def _histograms(con: duckdb.DuckDBPyConnection, sqls: list[str], nkeys: int) -> list[Counter]:
    res = []
    for sql in sqls:
        c: Counter = Counter()
        for r in con.execute(sql).fetchall():
            c[(tuple(r[:nkeys]), r[nkeys])] += r[nkeys + 1]
        res.append(c)
    return res


def _violations(shape: str, mutate=lambda s: s, dbs: int = 8) -> tuple[int, list[str]]:
    pol = policy_from_dict(POLICY)
    rw = rewrite(shape, build_catalog(pol, SCHEMA), dialect="duckdb")
    plan = rw.plan
    assert plan is not None and plan.quantiles and plan.histograms
    assert all(q.max_contribution == MAX_ROWS for q in plan.quantiles)
    sqls = [mutate(h.sql.replace('"main"."t"', "t")) for h in plan.histograms]
    nk = len(plan.keys)
    problems: list[str] = []
    rng = random.Random(zlib.crc32(shape.encode()))
    checked = 0
    for db in range(dbs):
        rows = _rows(rng, heavy=db == 0)
        frame = pd.DataFrame(rows, columns=["uid", "x", "a", "g", "h", "d"])
        con = duckdb.connect()
        con.register("frame", frame)
        con.execute("CREATE TABLE full_t AS SELECT uid::INT AS uid, x::DOUBLE AS x, a::INT AS a, g, h, d::DATE AS d FROM frame")
        con.execute("CREATE VIEW t AS SELECT * FROM full_t")
        full = _histograms(con, sqls, nk)
        for u in sorted({r[0] for r in rows if r[0] is not None}):
            con.execute(f"CREATE OR REPLACE VIEW t AS SELECT * FROM full_t WHERE uid IS DISTINCT FROM {u}")
            less = _histograms(con, sqls, nk)
            for h_full, h_less in zip(full, less, strict=True):
                per_group: Counter = Counter()
                for key in set(h_full) | set(h_less):
                    per_group[key[0]] += abs(h_full[key] - h_less[key])
                changed = [g for g, v in per_group.items() if v]
                if len(changed) > plan.max_groups or any(v > MAX_ROWS for v in per_group.values()):
                    problems.append(f"db {db} unit {u}: {dict(per_group)}")
                checked += 1
        con.close()
    return checked, problems


@pytest.mark.parametrize("shape", SHAPES)
def test_t1_histograms(shape: str) -> None:
    checked, problems = _violations(shape)
    assert checked > 20
    assert not problems, problems[:3]


@pytest.mark.parametrize(
    ("shape", "mutate"),
    [
        ("SELECT MEDIAN(x) FROM t", lambda s: s.replace("__dp_vrank <= 3", "__dp_vrank <= 4")),  # one value too many
        ("SELECT h, MEDIAN(x) FROM t GROUP BY h", lambda s: s.replace("__dp_grank <= 2", "__dp_grank <= 3")),  # one group too many
    ],
)
def test_t1_negative_controls(shape: str, mutate) -> None:
    """The replay catches a bound loosened by one (the heavy unit exceeds it): the test can fail."""
    _, problems = _violations(shape, mutate, dbs=1)
    assert problems
