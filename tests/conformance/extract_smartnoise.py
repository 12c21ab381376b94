"""Build smartnoise_pums.json from SmartNoise SQL's PUMS validation lists (copied in smartnoise/).

Usage: ``python tests/conformance/extract_smartnoise.py > tests/conformance/smartnoise_pums.json``

Queries are split as SmartNoise's own test driver splits them (``;``, ``--`` comment lines dropped)
and kept verbatim (T-SQL: ``TOP n``, ``PUMS.PUMS``). Queries of ``validate_pums.sql`` must be
answered; those of ``validate_pums_fail.sql`` SmartNoise refuses. For each refused query we say
whether dpsql must refuse it too (``must_refuse``: it is not valid SQL, or releases raw rows) or may
answer it (SmartNoise refuses an expression it cannot bound; dpsql bounds it by interval arithmetic
from the declared column bounds, so an answer is not a leak and is checked against the exact value).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent / "smartnoise"
SOURCE = {
    "repository": "https://github.com/opendp/smartnoise-sdk",
    "path": "sql/tests/query/queries/validate_pums/",
    "commit": "81d1351b383b5d45b0818ae140a7291b4ce4a841",
    "license": "MIT",
    "metadata": "datasets/PUMS_pid.yaml (pid is the private id; age in [0, 100], income in [0, 500000])",
}

# validate_pums_fail.sql, in file order: (must dpsql refuse it too?, why SmartNoise refuses it)
FAIL_REASONS: list[tuple[bool, str]] = [
    (False, "SUM of an expression: SmartNoise cannot bound Age + Income; dpsql bounds it by interval arithmetic"),
    (True, "nested aggregate SUM(SUM(age)) is not valid SQL"),
    (True, "educ is neither grouped nor aggregated (not valid SQL)"),
    (False, "COUNT over a SELECT * subquery: SmartNoise refuses the row-level subquery; dpsql merges it"),
    (True, "releases raw rows (pid, income) of a self-join"),
    (True, "married, educ, income are neither grouped nor aggregated (not valid SQL)"),
    (True, "married is neither grouped nor aggregated (not valid SQL)"),
    (True, "releases a per-row expression without aggregation (raw rows)"),
    (False, "SUM of a CASE expression: SmartNoise cannot bound it; dpsql bounds it by interval arithmetic"),
    (False, "SUM(age + 1): SmartNoise cannot bound the expression; dpsql bounds it by interval arithmetic"),
]
IGNORE_COLUMNS = {"SELECT PI(), RAND(), POWER(AVG(age), 2) FROM PUMS.PUMS": [1]}  # RAND() differs per run


def queries(path: Path) -> list[str]:
    """The file's queries, split the way SmartNoise's test_validate_pums.py splits them."""
    lines = path.read_text().splitlines()
    text = " ".join(ln for ln in lines if ln.strip() and not ln.strip().startswith("--"))
    return [q.strip() for q in text.split(";") if q.strip()]


def build() -> dict[str, Any]:
    """The corpus: source and one entry per query."""
    cases: list[dict[str, Any]] = []
    for i, sql in enumerate(queries(HERE / "validate_pums.sql")):
        case: dict[str, Any] = {"id": f"valid_{i + 1:02d}", "list": "valid", "sql": sql}
        if sql in IGNORE_COLUMNS:
            case["ignore_columns"] = IGNORE_COLUMNS[sql]
        cases.append(case)
    fail = queries(HERE / "validate_pums_fail.sql")
    assert len(fail) == len(FAIL_REASONS), (len(fail), len(FAIL_REASONS))
    for i, (sql, (must, reason)) in enumerate(zip(fail, FAIL_REASONS, strict=True)):
        cases.append({"id": f"fail_{i + 1:02d}", "list": "fail", "sql": sql, "must_refuse": must, "reason": reason})
    return {"source": SOURCE, "cases": cases}


def main() -> None:
    """Print the corpus as JSON."""
    json.dump(build(), sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
