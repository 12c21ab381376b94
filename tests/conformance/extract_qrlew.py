"""Build qrlew_queries.json from Qrlew's integration-test query lists.

Usage: ``python tests/conformance/extract_qrlew.py PATH/tests/integration.rs > tests/conformance/qrlew_queries.json``

The source is ``tests/integration.rs`` of github.com/Qrlew/qrlew (Apache-2.0): its ``QUERIES`` and
``POSTGRESQL_QUERIES`` arrays (PostgreSQL text; Qrlew checks that each query survives its
relation round trip with an unchanged answer). Queries are kept verbatim, duplicates dropped. Each
is marked ``raw`` when its outer SELECT has neither an aggregate nor GROUP BY/DISTINCT, i.e. it
releases rows: over a private table dpsql must refuse it; otherwise its answer must match the exact
one (run.py).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import sqlglot
from sqlglot import exp

SOURCE = {
    "repository": "https://github.com/Qrlew/qrlew",
    "path": "tests/integration.rs (QUERIES, POSTGRESQL_QUERIES)",
    "commit": "52de1a38a38b822a36535560c5ee94e7302d0e46",
    "license": "Apache-2.0",
    "schema": "src/io/mod.rs test_tables()",
}
ARRAYS = ("QUERIES", "POSTGRESQL_QUERIES")
NOT_EXPRESSIBLE = {
    'SELECT "Id", NORMAL_COL, "Na.Me" FROM "MY SPECIAL TABLE"':
        'the columns "Na.Me" and "inc&ome" of "MY SPECIAL TABLE" are not identifiers a policy can declare',
}
_LITERAL = re.compile(r'r#"(.*?)"#|"((?:[^"\\]|\\.)*)"', re.S)


def array_literals(rust: str, name: str) -> list[str]:
    """The string literals of ``const NAME: &[&str] = &[ ... ];`` (line comments dropped)."""
    m = re.search(rf"const {name}: &\[&str\] = &\[(.*?)\n\];", rust, re.S)
    assert m, name
    body = "\n".join(line for line in m.group(1).splitlines() if not line.strip().startswith("//"))
    return [(raw if raw else s.replace('\\"', '"')) for raw, s in _LITERAL.findall(body)]


def releases_rows(sql: str) -> bool:
    """Whether the outer SELECT(s) release rows: no aggregate, no GROUP BY, no DISTINCT."""
    tree = sqlglot.parse_one(sql, read="postgres")
    selects = [tree] if isinstance(tree, exp.Select) else list(tree.find_all(exp.Select))
    outer = [s for s in selects if s.parent is None or not s.find_ancestor(exp.Select)] or selects[:1]
    for s in outer:
        if s.args.get("group") or s.args.get("distinct"):
            return False
        if any(isinstance(e, exp.AggFunc) for proj in s.expressions for e in proj.walk()):
            return False
    return True


def build(rust: str) -> dict[str, Any]:
    """The corpus: source and one entry per distinct query."""
    seen: set[str] = set()
    cases: list[dict[str, Any]] = []
    for name in ARRAYS:
        for sql in array_literals(rust, name):
            sql = re.sub(r"\s+", " ", sql).strip()
            if sql in seen:
                continue
            seen.add(sql)
            case: dict[str, Any] = {"id": f"{name.lower()}_{len(cases) + 1:02d}", "sql": sql, "raw": releases_rows(sql)}
            if sql in NOT_EXPRESSIBLE:
                case["not_expressible"] = NOT_EXPRESSIBLE[sql]
            cases.append(case)
    return {"source": SOURCE, "cases": cases}


def main() -> None:
    """Print the corpus as JSON."""
    json.dump(build(Path(sys.argv[1]).read_text()), sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
