"""The policy file of the hospital demo (DESIGN §2), as TOML text."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Literal

from dpsql.examples.hospital_data import DEPARTMENTS, INSURANCES, REGIONS, SEXES

Format = Literal["duckdb", "parquet"]
DATABASE_FILE = "hospital.duckdb"
TABLES = ("visits", "patients", "departments")


def policy_toml(verifiers: Mapping[str, str], *, fmt: Format = "duckdb", note: str = "") -> str:
    """The demo policy: ``[source] duckdb`` for ``fmt="duckdb"``, or one ``file = "<table>.parquet"``
    per table for ``fmt="parquet"``. ``verifiers`` maps each user to a SCRAM-SHA-256 verifier;
    ``note`` is added as comment lines at the top (e.g. the demo passwords).

    Bounds: age 0–100, cost 0–10000, length_of_stay 0–20, birth_year 1920–2025; visits
    ``max_rows = 40``, ``max_groups = 6``. These come from ``dpsql tune`` on the demo data (ε = 1;
    it suggested max_rows 36–40, max_groups 6, cost ≤ 8300–8900, length_of_stay ≤ 19), rounded up:
    the headline queries then lose ≈ 1% (COUNT(*)), ≈ 0–2% (COUNT per department) and ≈ 1–3%
    (AVG(cost) per department, SUM(cost)) to contribution bounding, where ``max_rows = 5``,
    ``max_groups = 3`` and cost ≤ 5000 lost 49%, 39% and 4–8%. Public value lists for
    department(_id), sex, region and insurance; none for diagnosis, so grouping by it goes
    through DP partition selection.
    """
    parquet = fmt == "parquet"
    lines = [
        "# dpsql policy for the synthetic hospital demo (made by dpsql.examples.hospital).",
        *(f"# {line}" if line else "#" for line in note.splitlines()),
        "",
    ]
    if not parquet:
        lines += ["[source]", f"duckdb = {_s(DATABASE_FILE)}", ""]
    lines += [
        "[server]",
        'listen = "127.0.0.1:6432"',
        'auth = "scram-sha-256"',
        "",
        "[privacy]",
        'accounting = "zcdp"',
        "default_epsilon = 1.0",
        "default_delta = 1e-7",
        "max_epsilon_per_query = 2.0",
        "",
        "[budget]",
        "epsilon = 10.0",
        "delta = 1e-6",
        'window = "7d"',
        "session_epsilon = 5.0",
        "",
        "[budget.global]",
        "epsilon = 40.0",
        "delta = 1e-5",
        "",
    ]
    for user, verifier in verifiers.items():
        lines += [f"[users.{user}]", f"password = {_s(verifier)}", ""]

    departments = [d.name for d in DEPARTMENTS]
    lines += [
        "[tables.visits]",
        'privacy_unit = "patient_id"',
        "max_groups = 48  # groups one patient may touch in one query: months of a monthly series (dpsql tune: 6 departments)",
        "max_rows = 40  # visits one patient may contribute to one group (dpsql tune: 36-40)",
        "max_contributions = 60  # visits one patient may contribute across all groups (L1; monthly COUNT within 1%)",
        *([f"file = {_s('visits.parquet')}"] if parquet else []),
        "",
        "[tables.visits.columns]",
        "visit_date = {}",
        f"department_id = {{ values = {_list([d.id for d in DEPARTMENTS])} }}",
        f"department = {{ values = {_list(departments)} }}",
        "diagnosis = {}  # no public list: GROUP BY diagnosis uses DP partition selection",
        "age = { lower = 0, upper = 100 }",
        f"sex = {{ values = {_list(SEXES)} }}",
        "cost = { lower = 0.0, upper = 10000.0 }  # dpsql tune: 0-8300 (a few outliers are still clamped)",
        "length_of_stay = { lower = 0, upper = 20 }",
        "",
        "[tables.patients]",
        'privacy_unit = "patient_id"',
        "max_groups = 1",
        "max_rows = 1",
        *([f"file = {_s('patients.parquet')}"] if parquet else []),
        "",
        "[tables.patients.columns]",
        "birth_year = { lower = 1920, upper = 2025 }",
        f"sex = {{ values = {_list(SEXES)} }}",
        f"region = {{ values = {_list([r for r, _ in REGIONS])} }}",
        f"insurance = {{ values = {_list(INSURANCES)} }}",
        "",
        "[tables.departments]",
        "public = true",
        *([f"file = {_s('departments.parquet')}"] if parquet else []),
        "",
    ]
    return "\n".join(lines)


def _s(text: str) -> str:
    """A TOML basic string (JSON string syntax is valid TOML for these ASCII values)."""
    return json.dumps(text)


def _list(values: list[str] | list[int] | tuple[str, ...]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"
