"""``to_char(number, pattern)`` over released values prints what PostgreSQL prints
(rewriter/number_format.py): random patterns of the supported grammar and random numeric and
float8 values are formatted by a live PostgreSQL server and by dpsql, character for character."""

from __future__ import annotations

import random

import pytest
from pgenv import PgEnv

from dpsql.rewriter.number_format import is_number_pattern, to_char_number

pytestmark = pytest.mark.postgres


def _patterns(rng: random.Random, n: int) -> list[str]:
    out: set[str] = set()
    while len(out) < n:
        head = "9" + "".join(rng.choice("99990,G") for _ in range(rng.randint(0, 8 if rng.random() < 0.8 else 20)))
        tail = "".join(rng.choice("990") for _ in range(rng.randint(0, 4)))
        point = rng.choice(["", ".", "D"]) if tail else rng.choice(["", "", "."])
        pattern = rng.choice(["", "FM"]) + head + point + tail
        assert is_number_pattern(pattern)
        out.add(pattern)
    return sorted(out)


def _values(rng: random.Random, n: int) -> list[str]:
    ties = [
        "0",
        "0.5",
        "1.5",
        "2.5",
        "-0.5",
        "-2.5",
        "0.005",
        "0.015",
        "0.125",
        "-2.675",
        "1e-7",
        "999.995",
        "-0.001",
        "123456789012.345678",
        "-98765432109876.5",
        "1234567890123456789",
    ]
    out = []
    for _ in range(n):
        kind = rng.randrange(4)
        if kind == 0:
            out.append(repr(round(rng.uniform(-1e6, 1e6), rng.randint(0, 6))))
        elif kind == 1:
            out.append(str(rng.randint(-99999, 99999)))
        elif kind == 2:
            out.append(repr(round(rng.uniform(-2, 2), 3)))
        else:
            out.append(rng.choice(ties))
    return out


def test_to_char_number_matches_postgres(pg: PgEnv) -> None:
    rng = random.Random(20261204)
    patterns = _patterns(rng, 120)
    cases = [(v, rng.choice(["numeric", "float8"]), rng.choice(patterns)) for v in _values(rng, 2000)]
    exprs = ", ".join(f"to_char({v}::{t}, '{p}')" for v, t, p in cases)
    (row,) = pg.sql(f"SELECT ARRAY[{exprs}]")
    expected = list(row[0])
    mismatches = [
        (v, t, p, want, got)
        for (v, t, p), want in zip(cases, expected, strict=True)
        if (got := to_char_number(v, p, "DOUBLE" if t == "float8" else "DECIMAL(18,6)")) != want
    ]
    assert not mismatches, "\n".join(map(repr, mismatches[:10]))
