"""Translate ZetaSQL's DP compliance tests into dpsql cases (plain SQL + policy spec + expected rows).

Usage: ``python tests/conformance/translate_zetasql.py PATH/differential_privacy.test > tests/conformance/zetasql_cases.json``

The input is ``zetasql/compliance/testdata/differential_privacy.test`` from github.com/google/zetasql
(Apache-2.0). The output (committed) holds, per case: its name, the original GoogleSQL text and
expected output, the options, the plain SQL dpsql is sent, the bounds it needs (each marked
``per_group`` or ``per_row`` as GoogleSQL declares them), ε/δ, and the expected rows (or error),
or the reason the case is not expressible in dpsql's model. The runner (``run.py``) turns the bounds
into a policy using the bound kinds dpsql's policy loader accepts at run time.

Rules (each applied by ``translate_case``; the README lists them with their justification):
- ``WITH DIFFERENTIAL_PRIVACY OPTIONS (...)`` is removed; ``epsilon``/``delta`` become session
  settings (capped at what the ledger can hold, see run.py), ``max_groups_contributed`` becomes the
  table's ``max_groups`` (NULL → no limit on these tables), ``max_rows_contributed`` the L1 bound.
- ``contribution_bounds_per_group``/``_per_row => (lo, hi)`` become column bounds of that kind; on
  COUNT they bound the rows a unit contributes (``max_rows = hi``). Implicit bounds (none given:
  GoogleSQL estimates them from the data) become the declared domain [-5, 5], which holds every
  value of the test tables, so nothing is clamped, as at GoogleSQL's ε = 1e20.
- Rows per (unit, group): GoogleSQL samples 5 rows per unit for VAR/STDDEV/quantiles, and keeps all
  rows for SUM/AVG/COUNT: ``max_rows`` is 5, resp. 10 (more than any unit's rows here).
- ``PERCENTILE_CONT(x, q)`` → ``PERCENTILE_CONT(q) WITHIN GROUP (ORDER BY x)``;
  ``APPROX_QUANTILES(x, n)[OFFSET(k)]`` → ``PERCENTILE_DISC(k/n) WITHIN GROUP (ORDER BY x)``.
- A ``report_format`` case keeps its GoogleSQL text (``googlesql``; ``"PROTO"`` → ``'JSON'``), which
  the runner sends as GoogleSQL DP syntax; its expected rows are the reported values (one per
  report, led by the group key). A case reading a field of the report is not expressible.
- ``UNNEST([1, 2, 3]) AS x`` → a public table ``unnest_x_1_2_3(x)`` with those rows.
- Branches computed without DP (the reference values some cases compare against) are dropped: dpsql
  has no non-DP access to a private table; the expected rows keep the DP branches' values.
  ``ABS(dp_value - c) < t`` comparisons become an expected value ``c`` with tolerance ``t``.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any

SOURCE = {
    "repository": "https://github.com/google/zetasql",
    "path": "zetasql/compliance/testdata/differential_privacy.test",
    "commit": "2d8f7b7db9e4ede0557664d256f49804069356e5",
    "license": "Apache-2.0",
}
DOMAIN = (-5, 5)  # declared bounds standing in for GoogleSQL's implicit (data-estimated) bounds
EPS_CAP = 1e6  # the largest per-query ε the ledger can record (run.py's policy allows it)
SAMPLED = ("VAR_POP", "STDDEV_POP", "PERCENTILE_CONT", "APPROX_QUANTILES")

NE_REPORT_FIELD = ("reads a field of GoogleSQL's report (`….value.noise_confidence_interval`, `dp_result[OFFSET(k)]` "
                   "of a quantile report array): dpsql returns each report as one JSON text value, without field access")
REPORT_FIELD = re.compile(r"\)\s*\.\s*(value|result)\b|\bdp_result\b", re.I)
NE_OPTION_VALIDATION = ("tests GoogleSQL option validation; dpsql's ε/δ come from the session or the "
                        "policy's defaults, so there is no missing option to reject")

# Cases whose translation is written out: name -> dict(sql=..., expected=..., notes=..., bounds=...).
# Bounds are (column, kind, lo, hi); kinds: per_group | per_row | domain.
OVERRIDES: dict[str, dict[str, Any]] = {
    "differential_privacy_basic_delta_not_set": {"not_expressible": NE_OPTION_VALIDATION},
    "differential_privacy_basic_epsilon_not_set": {"not_expressible": NE_OPTION_VALIDATION},
    "differential_privacy_max_groups_contributed_group_by_2": {
        "sql": "SELECT SUM(count_star) FROM (SELECT x, COUNT(*) AS count_star FROM TestTableWithUid "
               "CROSS JOIN unnest_x_1_2_3 GROUP BY x) AS dp",
        "notes": "outer SUM over a DP result (post-processing, issue 11 §2)"},
    "differential_privacy_max_groups_contributed_group_by_1": {
        "sql": "SELECT SUM(count_star) FROM (SELECT x, COUNT(*) AS count_star FROM TestTableWithUid "
               "CROSS JOIN unnest_x_1_2_3 GROUP BY x) AS dp",
        "notes": "outer SUM over a DP result (post-processing, issue 11 §2)"},
    "differential_privacy_basic_var_pop_implicit_bounds": {
        "sql": "SELECT VAR_POP(double_val), VAR_POP(int64_val) FROM TestTableWithUid2",
        "expected_rows": [[2.359375, 1]], "ordered": False,
        "notes": "non-DP reference branch dropped"},
    "differential_privacy_basic_var_pop_explicit_bounds": {
        "sql": "SELECT VAR_POP(double_val) FROM TestTableWithUid2 UNION ALL SELECT VAR_POP(int64_val) FROM TestTableWithUid2",
        "bounds": [("double_val", "per_row", 2, 3), ("int64_val", "per_row", 2, 3)],
        "expected_rows": [[0.125], [0.1875]], "ordered": False,
        "notes": "non-DP reference branches dropped; UNION ALL of two DP aggregates (issue 11 §2)"},
    "differential_privacy_basic_var_pop_explicit_bounds_all_nulls": {
        "sql": "SELECT VAR_POP(double_val) FROM TestTableWithUid4 UNION ALL SELECT VAR_POP(int64_val) FROM TestTableWithUid4",
        "bounds": [("double_val", "per_row", 10, 100), ("int64_val", "per_row", 10, 100)],
        "expected_rows": [[2025], [2025]], "ordered": False,
        "notes": "UNION ALL of two DP aggregates (issue 11 §2); GoogleSQL's VAR_POP of no values is the "
                 "variance of {lower, upper}"},
    "differential_privacy_verify_non_randomness_of_var_pop_implicit_bounds": {
        "sql": "SELECT VAR_POP(double_val) FROM TestTableWithUid2",
        "expected_rows": [[{"approx": "exact:VAR_POP(double_val):testtablewithuid2", "tol": 1e-6}]],
        "notes": "|DP − exact| < 1e-6 becomes an expected value with that tolerance"},
    "differential_privacy_verify_randomness_of_var_pop_implicit_bounds": {
        "sql": "SELECT VAR_POP(double_val) FROM TestTableWithUid3",
        "expected_rows": [[{"differs": "exact:VAR_POP(double_val):testtablewithuid3", "tol": 1e-6}]],
        "notes": "a unit with 7 rows keeps 5 (max_rows): the DP value must differ from the all-rows value"},
    "differential_privacy_basic_stddev_pop_implicit_bounds": {
        "sql": "SELECT STDDEV_POP(double_val), STDDEV_POP(int64_val) FROM TestTableWithUid2",
        "expected_rows": [[1.5360257159305635, 1]], "ordered": False,
        "notes": "non-DP reference branch dropped"},
    "differential_privacy_basic_stddev_pop_explicit_bounds": {
        "sql": "SELECT STDDEV_POP(double_val) FROM TestTableWithUid2 UNION ALL SELECT STDDEV_POP(int64_val) FROM TestTableWithUid2",
        "bounds": [("double_val", "per_row", 2, 3), ("int64_val", "per_row", 2, 3)],
        "expected_rows": [[0.35355339059327379], [0.4330127018922193]], "ordered": False,
        "notes": "non-DP reference branches dropped; UNION ALL of two DP aggregates (issue 11 §2)"},
    "differential_privacy_basic_stddev_pop_explicit_bounds_all_nulls": {
        "sql": "SELECT STDDEV_POP(double_val) FROM TestTableWithUid4 UNION ALL SELECT STDDEV_POP(int64_val) FROM TestTableWithUid4",
        "bounds": [("double_val", "per_row", 2, 3), ("int64_val", "per_row", 2, 3)],
        "expected_rows": [[0.5], [0.5]], "ordered": False,
        "notes": "UNION ALL of two DP aggregates (issue 11 §2); GoogleSQL's STDDEV_POP of no values is that of {lower, upper}"},
    "differential_privacy_basic_percentile_cont_implicit_bounds": {
        "sql": "SELECT PERCENTILE_CONT(0.4) WITHIN GROUP (ORDER BY double_val), "
               "PERCENTILE_CONT(0.6) WITHIN GROUP (ORDER BY int64_val) FROM TestTableWithUid2",
        "expected_rows": [[{"approx": 1.5, "tol": 0.01}, {"approx": 2, "tol": 0.01}]]},
    "differential_privacy_basic_percentile_cont_implicit_bounds_with_params": {
        "sql": "SELECT PERCENTILE_CONT(0.4) WITHIN GROUP (ORDER BY double_val), "
               "PERCENTILE_CONT(0.6) WITHIN GROUP (ORDER BY int64_val) FROM TestTableWithUid2",
        "bounds": [("double_val", "per_row", 1, 3), ("int64_val", "per_row", 1, 3)],
        "expected_rows": [[{"approx": 1.5, "tol": 0.01}, {"approx": 2, "tol": 0.01}]]},
    "differential_privacy_basic_percentile_cont_explicit_bounds": {
        "sql": "SELECT PERCENTILE_CONT(0.4) WITHIN GROUP (ORDER BY double_val), "
               "PERCENTILE_CONT(0.6) WITHIN GROUP (ORDER BY int64_val) FROM TestTableWithUid2",
        "bounds": [("double_val", "per_row", 1, 3), ("int64_val", "per_row", 1, 3)],
        "expected_rows": [[{"approx": 1.5, "tol": 0.01}, {"approx": 2, "tol": 0.01}]]},
    "differential_privacy_verify_non_randomness_of_percentile_cont_implicit_bounds": {
        "sql": "SELECT PERCENTILE_CONT(0.1) WITHIN GROUP (ORDER BY double_val) FROM TestTableWithUid2",
        "expected_rows": [[{"approx": -1.5, "tol": 0.01}]],
        "notes": "non-DP window-function reference branches dropped"},
    "differential_privacy_verify_non_randomness_of_percentile_cont_implicit_bounds_2": {
        "sql": "SELECT PERCENTILE_CONT(0.7) WITHIN GROUP (ORDER BY double_val) FROM TestTableWithUid2",
        "expected_rows": [[{"approx": 2.5, "tol": 0.01}]],
        "notes": "non-DP window-function reference branches dropped"},
    "differential_privacy_basic_approx_quantiles_explicit_bounds": {
        "sql": "SELECT PERCENTILE_DISC(0.4) WITHIN GROUP (ORDER BY double_val), "
               "PERCENTILE_DISC(0.6) WITHIN GROUP (ORDER BY int64_val) FROM TestTableWithUid2",
        "bounds": [("double_val", "per_row", 1, 3), ("int64_val", "per_row", 1, 3)],
        "expected_rows": [[{"approx": 1.5, "tol": 0.01}, {"approx": 2, "tol": 0.01}]],
        "notes": "APPROX_QUANTILES(x, 5)[OFFSET(k)] as PERCENTILE_DISC(k/5)"},
    "differential_privacy_basic_approx_quantiles_explicit_bounds_result_length": {
        "sql": "SELECT array_length(PERCENTILE_DISC(ARRAY[0, 0.2, 0.4, 0.6, 0.8, 1]) WITHIN GROUP (ORDER BY double_val), 1), "
               "array_length(PERCENTILE_DISC(ARRAY[0, 0.2, 0.4, 0.6, 0.8, 1]) WITHIN GROUP (ORDER BY int64_val), 1) "
               "FROM TestTableWithUid2",
        "bounds": [("double_val", "per_row", 1, 3), ("int64_val", "per_row", 1, 3)],
        "expected_rows": [[6, 6]],
        "notes": "APPROX_QUANTILES(x, 5) as PostgreSQL's array form of PERCENTILE_DISC"},
    "differential_privacy_verify_non_randomness_of_approx_quantiles_explicit_bounds": {
        "sql": "SELECT PERCENTILE_DISC(0.1) WITHIN GROUP (ORDER BY double_val) FROM TestTableWithUid2",
        "bounds": [("double_val", "per_row", -2, 10)],
        "expected_rows": [[{"approx": -1.5, "tol": 0.01}]],
        "notes": "APPROX_QUANTILES(x, 10)[OFFSET(1)] as PERCENTILE_DISC(0.1); non-DP reference branch dropped"},
    "differential_privacy_verify_non_randomness_of_approx_quantiles_explicit_bounds_2": {
        "sql": "SELECT PERCENTILE_DISC(0.7) WITHIN GROUP (ORDER BY double_val) FROM TestTableWithUid2",
        "bounds": [("double_val", "per_row", -2, 10)],
        "expected_rows": [[{"approx": 2.5, "tol": 0.01}]],
        "notes": "APPROX_QUANTILES(x, 10)[OFFSET(7)] as PERCENTILE_DISC(0.7); non-DP reference branch dropped"},
    "differential_privacy_approx_bounds_on_no_data_returns_null": {
        "sql": "SELECT int64_val, COUNT(*) FROM TestTableWithUid RIGHT OUTER JOIN "
               "(SELECT DISTINCT int64_val FROM unnest_int64_val_9999) AS g USING (int64_val) GROUP BY int64_val"},
    "differential_privacy_nested_public_groups": {
        "sql": "WITH SelectedGroups AS (SELECT int64_val FROM TestTableWithUid GROUP BY int64_val) "
               "SELECT int64_val, COUNT(*) AS anon_count FROM TestTableWithUid RIGHT OUTER JOIN SelectedGroups "
               "USING (int64_val) GROUP BY int64_val",
        "notes": "a DP release whose keys restrict an outer DP query (staged release, issue 11 §2); "
                 "the inner release has max_groups_contributed = 1, which holds here (one row per unit)"},
}


def blocks(text: str) -> list[list[str]]:
    """The file's blocks (separated by lines ``==``), each as its lines."""
    out: list[list[str]] = [[]]
    for line in text.splitlines():
        if line.strip() == "==":
            out.append([])
        else:
            out[-1].append(line)
    return [b for b in out if any(s.strip() for s in b)]


def split_block(lines: list[str]) -> tuple[dict[str, str], str, str]:
    """(bracketed headers, SQL, expected text) of one block; comments dropped."""
    headers: dict[str, str] = {}
    sql: list[str] = []
    expected: list[str] = []
    seen_sep = False
    for line in lines:
        if seen_sep:
            expected.append(line)
        elif line.strip() == "--":
            seen_sep = True
        elif not sql and line.startswith("["):
            m = re.match(r"\[(\w+)(?:=(.*))?\]$", line.strip())
            if m:
                headers[m.group(1)] = m.group(2) or ""
        elif not sql and (line.lstrip().startswith("#") or not line.strip()):
            continue
        else:
            sql.append(line)
    return headers, "\n".join(sql).strip(), "\n".join(expected).strip()


class ValueParser:
    """A parser for ZetaSQL's expected-value text: ``ARRAY<STRUCT<...>>[{1, NULL}, ...]``."""

    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def ws(self) -> None:
        while self.i < len(self.s) and self.s[self.i] in " \n\t":
            self.i += 1

    def eat(self, tok: str) -> bool:
        self.ws()
        if self.s.startswith(tok, self.i):
            self.i += len(tok)
            return True
        return False

    def header(self) -> list[tuple[str | None, str]]:
        """The STRUCT field list: (name or None, type)."""
        self.ws()
        assert self.s.startswith("ARRAY<STRUCT<", self.i), self.s[self.i:self.i + 40]
        self.i += len("ARRAY<STRUCT<")
        depth, start = 1, self.i
        while depth:
            c = self.s[self.i]
            depth += c == "<"
            depth -= c == ">"
            self.i += 1
        inner = self.s[start:self.i - 1]
        assert self.eat(">")
        fields = []
        for part in [p.strip() for p in inner.split(",")]:
            words = part.split()
            fields.append((words[0], words[1]) if len(words) == 2 else (None, words[0]))
        return fields

    def value(self) -> Any:
        self.ws()
        s = self.s
        if self.eat("NULL"):
            return None
        if self.eat("true"):
            return True
        if self.eat("false"):
            return False
        if s[self.i] == '"':
            j = s.index('"', self.i + 1)
            v = s[self.i + 1:j]
            self.i = j + 1
            return v
        m = re.compile(r"-?(?:\d+\.?\d*(?:e[-+]?\d+)?|inf|nan)").match(s, self.i)
        if not m:
            raise ValueError(f"cannot parse value at {s[self.i:self.i + 30]!r}")
        self.i = m.end()
        t = m.group(0)
        return float(t) if any(c in t for c in ".ein") else int(t)

    def rows(self) -> tuple[list[list[Any]], bool]:
        """(rows, ordered) of the array body."""
        assert self.eat("[")
        ordered = True
        if self.eat("known order:"):
            ordered = True
        elif self.eat("unknown order:"):
            ordered = False
        out: list[list[Any]] = []
        while not self.eat("]"):
            assert self.eat("{"), self.s[self.i:self.i + 30]
            row = [self.value()]
            while self.eat(","):
                row.append(self.value())
            assert self.eat("}"), self.s[self.i:self.i + 30]
            out.append(row)
            self.eat(",")
        return out, ordered or len(out) <= 1


def parse_table(sql: str, expected: str) -> dict[str, Any]:
    """A [prepare_database] block → {name, unit, columns: [(name, type)], rows}."""
    m = re.search(r"CREATE TABLE (\w+)(?:\s+OPTIONS\s*\(userid_column=(\w+)\))?", sql)
    assert m, sql
    p = ValueParser(expected)
    fields = p.header()
    rows, _ = p.rows()
    return {"name": m.group(1).lower(), "unit": m.group(2), "columns": [[n, t] for n, t in fields], "rows": rows}


def balanced(s: str, open_at: int) -> int:
    """Index just past the parenthesis matching the one at ``open_at``."""
    depth = 0
    for i in range(open_at, len(s)):
        depth += s[i] == "("
        depth -= s[i] == ")"
        if depth == 0:
            return i + 1
    raise ValueError("unbalanced parentheses")


def split_args(s: str) -> list[str]:
    """Top-level comma-separated parts of ``s``."""
    parts, depth, cur = [], 0, ""
    for c in s:
        if c == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
            continue
        depth += c in "(["
        depth -= c in ")]"
        cur += c
    if cur.strip():
        parts.append(cur.strip())
    return parts


def parse_options(text: str) -> dict[str, str]:
    """``epsilon=1e20, delta=1.0`` → {"epsilon": "1e20", "delta": "1.0"} (names lower-cased)."""
    out = {}
    for part in split_args(text):
        k, _, v = part.partition("=")
        out[k.strip().lower()] = v.strip()
    return out


def rewrite_aggregates(sql: str, bounds: list[tuple[str, str, float, float]], count_rows: list[float]) -> str:
    """Rewrite GoogleSQL aggregate calls with named arguments into plain SQL, collecting bounds."""
    pat = re.compile(r"\b(SUM|AVG|COUNT|VAR_POP|STDDEV_POP|PERCENTILE_CONT|APPROX_QUANTILES)\s*\(", re.I)
    out, pos = "", 0
    while True:
        m = pat.search(sql, pos)
        if not m:
            return out + sql[pos:]
        end = balanced(sql, m.end() - 1)
        name = m.group(1).upper()
        args = split_args(sql[m.end():end - 1])
        positional = [a for a in args if "=>" not in a]
        for a in args:
            if "=>" in a:
                key, _, val = a.partition("=>")
                key = key.strip().lower()
                if key.startswith("contribution_bounds_per_"):
                    lo, hi = (float(x) for x in split_args(val.strip()[1:-1]))
                    kind = "per_group" if key.endswith("group") else "per_row"
                    if name == "COUNT":
                        count_rows.append(hi)
                    else:
                        bounds.append((positional[0], kind, lo, hi))
        if name == "PERCENTILE_CONT":
            call = f"PERCENTILE_CONT({positional[1]}) WITHIN GROUP (ORDER BY {positional[0]})"
        else:
            call = f"{name}({', '.join(positional)})"
        out += sql[pos:m.start()] + call
        pos = end


def translate_query(sql: str) -> tuple[str, dict[str, str], list[tuple[str, str, float, float]], list[float]]:
    """(plain SQL, options, bounds, per-unit count bounds) of a single-DP-SELECT GoogleSQL query."""
    options: dict[str, str] = {}
    m = re.search(r"WITH\s+DIFFERENTIAL_PRIVACY\s+OPTIONS\s*\(", sql, re.I)
    if m:
        end = balanced(sql, m.end() - 1)
        options = parse_options(sql[m.end():end - 1])
        sql = sql[:m.start()] + sql[end:]
    bounds: list[tuple[str, str, float, float]] = []
    count_rows: list[float] = []
    sql = rewrite_aggregates(sql, bounds, count_rows)
    sql = re.sub(r"UNNEST\(\[([\d,\s]+)\]\)\s+AS\s+(\w+)",
                 lambda u: f"unnest_{u.group(2)}_" + "_".join(v.strip() for v in u.group(1).split(",")), sql, flags=re.I)
    sql = re.sub(r"RIGHT OUTER JOIN \(\s*(SELECT DISTINCT \w+ FROM \w+)\s*\)\s*using", r"RIGHT OUTER JOIN (\1) AS g USING",
                 sql, flags=re.I)
    sql = re.sub(r",\s*FROM\b", "\nFROM", sql)
    sql = re.sub(r"\s+", " ", sql).strip().rstrip(";").strip()
    return sql, options, bounds, count_rows


def exact_reference(spec: str, tables: dict[str, dict[str, Any]]) -> float:
    """``exact:VAR_POP(col):table`` → that statistic over all non-NULL rows (no DP)."""
    _, fn, table = spec.split(":")
    m = re.match(r"(\w+)\((\w+)\)", fn)
    assert m
    t = tables[table]
    idx = [c[0] for c in t["columns"]].index(m.group(2))
    vals = [r[idx] for r in t["rows"] if r[idx] is not None]
    return {"VAR_POP": statistics.pvariance, "STDDEV_POP": statistics.pstdev}[m.group(1).upper()](vals)


def resolve(cell: Any, tables: dict[str, dict[str, Any]]) -> Any:
    """Replace ``exact:`` references in an expected cell by their values."""
    if isinstance(cell, dict):
        return {k: (exact_reference(v, tables) if isinstance(v, str) and v.startswith("exact:") else v) for k, v in cell.items()}
    return cell


def translate_case(name: str, headers: dict[str, str], sql: str, expected: str,
                   tables: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One test case → its dpsql translation (see the module docstring for the rules)."""
    case: dict[str, Any] = {"name": name, "zetasql": sql, "zetasql_expected": expected}
    ov = OVERRIDES.get(name, {})
    if "report_format" in sql:
        if REPORT_FIELD.search(sql):
            case["not_expressible"] = NE_REPORT_FIELD
            return case
        case["googlesql"] = re.sub(r"""report_format\s*=>\s*["']PROTO["']""", "report_format => 'JSON'", sql.strip().rstrip(";"))
    if "not_expressible" in ov:
        case["not_expressible"] = ov["not_expressible"]
        return case
    plain, options, bounds, count_rows = translate_query(sql)
    if "sql" in ov:
        plain = ov["sql"]
    if "bounds" in ov:
        bounds = [tuple(b) for b in ov["bounds"]]
    case["sql"] = plain
    case["options"] = options
    eps = float(options.get("epsilon", "1e20"))
    delta = float(options.get("delta", "1e-5")) if options.get("delta", "").upper() != "NULL" else 1e-5
    case["epsilon"] = min(eps, EPS_CAP)
    case["delta"] = delta
    groups = options.get("max_groups_contributed")
    case["max_groups"] = None if groups is None or groups.upper() == "NULL" else int(groups)
    rows_opt = options.get("max_rows_contributed")
    case["max_contributions"] = int(rows_opt) if rows_opt else None
    sampled = any(re.search(rf"\b{f}\b", sql, re.I) for f in SAMPLED)
    case["max_rows"] = int(min(count_rows)) if count_rows else (5 if sampled else 10)
    cols: dict[str, list[Any]] = {}
    for col, kind, lo, hi in bounds:
        if col in cols and cols[col] != [kind, lo, hi]:
            raise ValueError(f"{name}: column {col} has two bound sets")
        cols[col] = [kind, lo, hi]
    for col in ("int64_val", "double_val"):
        cols.setdefault(col, ["domain", *DOMAIN])
    case["bounds"] = cols
    if "notes" in ov:
        case["notes"] = ov["notes"]
    if expected.startswith("ERROR"):
        case["expected_error"] = expected
    elif "googlesql" in case:
        case["expected_rows"], case["ordered"] = report_rows(expected)
    elif "expected_rows" in ov:
        case["expected_rows"] = [[resolve(c, tables) for c in row] for row in ov["expected_rows"]]
        case["ordered"] = ov.get("ordered", True)
    else:
        p = ValueParser(expected.split("\n\nNOTE:")[0])
        p.header()
        case["expected_rows"], case["ordered"] = p.rows()
    return case


def report_rows(expected: str) -> tuple[list[list[Any]], bool]:
    """The released values of a report query's expected output (PROTO text or JSON), one row per
    report, each led by its group key when the query groups: ``[[1, 3], [2, 3]]``."""
    values = re.findall(r'"value":(-?[\d.e+-]+)|\bvalue \{\s*(?:int|float)_value: (-?[\d.e+-]+)', expected)
    numbers = [float(a or b) for a, b in values]
    cells: list[Any] = [int(v) if v.is_integer() else v for v in numbers]
    keys = re.findall(r"\{\s*(-?\d+),\s*\{", expected)
    if keys and len(keys) == len(cells):
        return [[int(k), v] for k, v in zip(keys, cells, strict=True)], "unknown order" not in expected
    return [[v] for v in cells], True


def translate(text: str) -> dict[str, Any]:
    """The whole .test file → the committed corpus (source, tables, cases)."""
    tables: dict[str, dict[str, Any]] = {}
    cases = []
    for block in blocks(text):
        headers, sql, expected = split_block(block)
        if "prepare_database" in headers:
            if sql.upper().startswith("CREATE TABLE"):
                t = parse_table(sql, expected)
                tables[t["name"]] = t
            continue
        if "name" in headers:
            cases.append(translate_case(headers["name"], headers, sql, expected, tables))
    return {"source": SOURCE, "tables": list(tables.values()), "cases": cases}


def main() -> None:
    """Print the translated corpus as JSON."""
    corpus = translate(Path(sys.argv[1]).read_text())
    json.dump(corpus, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
