"""Golden before/after files per rewriter pass (sqlglot's ``tests/fixtures/optimizer/<pass>.sql`` format).

``tests/rewriter/fixtures/<pass>.sql`` holds blocks separated by blank lines: ``# key: value``
lines (``title``, optional ``dialect`` — duckdb by default — and ``catalog``), then the input
statement and the expected SQL of the tree right after that pass, each ending with ``;`` on its own
line(s). :func:`dpsql.rewriter.rewrite_until` runs the passes of ``RULES`` up to the named one.
To regenerate after an intended change: ``DPSQL_FIXTURES=write pytest tests/rewriter/test_fixtures.py``
(then review the diff).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from dpsql.policy import policy_from_dict
from dpsql.rewriter import RULES, rewrite_until
from dpsql.schema import Catalog, build_catalog

from .conftest import DESCRIBED, KEYED_DESCRIBED, KEYED_POLICY, POLICY

FIXTURES = Path(__file__).parent / "fixtures"
PASSES = dict(RULES)

# R7's policy: bounds [2, 5] on x, max_rows 2 (the partial's clamp is [0, 10], not [4, 10])
SUM25 = {"server": {"auth": "trust"}, "budget": {"epsilon": 1, "delta": 1e-6}, "users": {"a": {}},
         "tables": {"t": {"privacy_unit": "u", "max_rows": 2, "columns": {"x": {"lower": 2, "upper": 5}}}}}

# Issue 10 §3: per-unit bounds on y (no row bounds: rows clamped to the derived [0, 50]), on z
# beside row bounds, and the L1 row cap max_contributions = 4 beside max_groups 2 × max_rows 3
BOUNDS = {"server": {"auth": "trust"}, "budget": {"epsilon": 1, "delta": 1e-6}, "users": {"a": {}},
          "tables": {"t": {"privacy_unit": "u", "max_rows": 3, "max_groups": 2, "max_contributions": 4,
                           "columns": {"x": {"lower": 0, "upper": 10}, "y": {"unit_lower": 0, "unit_upper": 50},
                                       "z": {"lower": -5, "upper": 5, "unit_lower": 2, "unit_upper": 3},
                                       "g": {"values": ["a", "b", "c"]}}}}}
BOUNDS_COLUMNS = [("u", "int8"), ("x", "int4"), ("y", "int4"), ("z", "int4"), ("g", "text")]


def _catalog(name: str) -> Catalog:
    if name == "sum25":
        return build_catalog(policy_from_dict(SUM25), {"public.t": [("u", "int8"), ("x", "int4")]})
    if name == "keyed":
        return build_catalog(policy_from_dict(KEYED_POLICY, "/tmp/keyed-policy.toml"), KEYED_DESCRIBED)
    if name == "bounds":
        return build_catalog(policy_from_dict(BOUNDS), {"public.t": BOUNDS_COLUMNS})
    return build_catalog(policy_from_dict(POLICY, "/tmp/policy.toml"), DESCRIBED)


@dataclass
class Case:
    pass_name: str
    title: str
    meta: dict[str, str]
    before: str
    after: str


def _cases(path: Path) -> list[Case]:
    out = []
    for block in path.read_text().strip().split("\n\n"):
        meta: dict[str, str] = {}
        body: list[str] = []
        for line in block.splitlines():
            if line.startswith("# ") and ":" in line and not body:
                k, v = line[2:].split(":", 1)
                meta[k.strip()] = v.strip()
            else:
                body.append(line)
        stmts = [s.strip() for s in "\n".join(body).split(";\n")]
        stmts = [s.removesuffix(";").strip() for s in stmts if s.strip()]
        assert len(stmts) == 2, f"{path.name}: block {meta.get('title')!r} needs an input and an expected statement"
        out.append(Case(path.stem, meta.get("title", ""), meta, stmts[0], stmts[1]))
    return out


CASES = [c for p in sorted(FIXTURES.glob("*.sql")) for c in _cases(p)]


def test_every_fixture_file_names_a_pass() -> None:
    assert CASES and all(c.pass_name in PASSES for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.pass_name}: {c.title}" for c in CASES])
def test_pass_fixture(case: Case) -> None:
    got = rewrite_until(case.before, _catalog(case.meta.get("catalog", "")), case.pass_name,
                        dialect=case.meta.get("dialect", "duckdb"))
    if os.environ.get("DPSQL_FIXTURES") == "write" and got != case.after:
        path = FIXTURES / f"{case.pass_name}.sql"
        text = path.read_text()
        path.write_text(text.replace(f"{case.before};\n{case.after};", f"{case.before};\n{got};", 1))
    assert got == case.after
