"""Keyed tables (issue 11 item 1): ``privacy_unit = { via = …, references = … }`` — accepted forms,
resolved key paths, and the errors (PolicyError, F0000) naming the file and the key."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from dpsql.errors import PolicyError
from dpsql.policy import KEYED_UNIT, MAX_UNIT_PATH, UnitStep, policy_from_dict
from dpsql.schema import build_catalog

BASE: dict[str, Any] = {
    "server": {"auth": "trust"},
    "budget": {"epsilon": 10, "delta": 1e-6},
    "users": {"a": {}},
    "tables": {
        "patients": {"privacy_unit": "patient_id", "columns": {"patient_id": {"unique": True}, "region": {}}},
        "visits": {"privacy_unit": "patient_id", "columns": {"visit_id": {"unique": True}, "cost": {"lower": 0, "upper": 10}}},
        "prescriptions": {
            "privacy_unit": {"via": "visit_id", "references": "visits.visit_id"},
            "max_rows": 4,
            "columns": {"rx_id": {"unique": True}, "dose": {"lower": 0, "upper": 5}},
        },
        "doses": {"privacy_unit": {"via": "rx_id", "references": "public.prescriptions.rx_id"}, "columns": {"amount": {}}},
        "wards": {"public": True},
    },
}

DESCRIBED = {
    "public.patients": [("patient_id", "int8"), ("region", "text")],
    "public.visits": [("visit_id", "int8"), ("patient_id", "int8"), ("cost", "float8")],
    "public.prescriptions": [("rx_id", "int8"), ("visit_id", "int8"), ("dose", "float8")],
    "public.doses": [("rx_id", "int8"), ("amount", "int4")],
    "public.wards": [("ward", "text")],
}


def _with(**tables: Any) -> dict[str, Any]:
    p = copy.deepcopy(BASE)
    for name, t in tables.items():
        if t is None:
            p["tables"].pop(name)
        else:
            p["tables"][name] = t
    return p


def test_key_paths_resolve() -> None:
    pol = policy_from_dict(BASE, "/x/policy.toml")
    rx, doses, visits = pol.table("prescriptions"), pol.table("doses"), pol.table("visits")
    assert rx is not None and doses is not None and visits is not None
    assert rx.keyed and rx.privacy_unit == KEYED_UNIT and rx.unit_root == "patient_id"
    assert rx.unit_path == (UnitStep("visit_id", "public.visits", "visit_id"),)
    assert doses.unit_path == (UnitStep("rx_id", "public.prescriptions", "rx_id"), UnitStep("visit_id", "public.visits", "visit_id"))
    assert "visit_id" in rx.columns and KEYED_UNIT not in rx.columns  # the key is visible, the unit is not
    assert not visits.keyed and visits.unit_label == "patient_id"
    assert rx.unit_label == "patient_id (through visit_id → public.visits.visit_id)"
    assert rx.max_rows == 4  # the keyed table's own bounds


def test_catalog_gives_keyed_tables_a_hidden_unit_column() -> None:
    cat = build_catalog(policy_from_dict(BASE, "/x/policy.toml"), DESCRIBED)
    rx = cat.table("prescriptions")
    assert rx is not None and rx.unit_column is not None and rx.unit_column.pg_type == "int8"
    assert KEYED_UNIT not in {c.name for c in rx.columns}
    assert KEYED_UNIT not in cat.sqlglot_schema()["public"]["prescriptions"]


REF = "tables.prescriptions.privacy_unit.references"


@pytest.mark.parametrize(
    ("tables", "key", "problem"),
    [
        ({"prescriptions": {"privacy_unit": {"via": "visit_id"}}}, "tables.prescriptions.privacy_unit.references", "is required"),
        ({"prescriptions": {"privacy_unit": {"references": "visits.visit_id"}}}, "tables.prescriptions.privacy_unit.via", "is required"),
        ({"prescriptions": {"privacy_unit": {"via": "visit_id", "references": "visits"}}}, REF, 'must be "table.column"'),
        (
            {"prescriptions": {"privacy_unit": {"via": "visit id", "references": "visits.visit_id"}}},
            "tables.prescriptions.privacy_unit.via",
            "is not a column name",
        ),
        (
            {"prescriptions": {"privacy_unit": {"via": "visit_id", "references": "visits.visit_id", "to": 1}}},
            "tables.prescriptions.privacy_unit.to",
            "unknown key",
        ),
        (
            {"prescriptions": {"privacy_unit": {"via": "visit_id", "references": "clinics.visit_id"}}},
            REF,
            "table clinics is not in the policy",
        ),
        ({"prescriptions": {"privacy_unit": {"via": "ward", "references": "wards.ward"}}}, REF, "wards is a public table"),
        (
            {"prescriptions": {"privacy_unit": {"via": "visit_id", "references": "visits.ref"}}},
            REF,
            "column 'ref' is not declared in tables.visits.columns",
        ),
        (
            {"prescriptions": {"privacy_unit": {"via": "visit_id", "references": "visits.cost"}}},
            REF,
            "visits.cost is not declared unique: declare tables.visits.columns.cost = { unique = true }",
        ),
        (
            {"doses": {"privacy_unit": {"via": "rx_id", "references": "prescriptions.dose"}}},
            "tables.doses.privacy_unit.references",
            "prescriptions.dose is not declared unique",
        ),
        # a cycle: visits → prescriptions → visits
        (
            {
                "visits": {
                    "privacy_unit": {"via": "rx_id", "references": "prescriptions.rx_id"},
                    "columns": {"visit_id": {"unique": True}},
                },
                "doses": None,
            },
            "tables.visits.privacy_unit.references",
            "the key path visits → prescriptions → visits is a cycle",
        ),
        (
            {
                "prescriptions": {
                    "privacy_unit": {"via": "rx_id", "references": "prescriptions.rx_id"},
                    "columns": {"rx_id": {"unique": True}},
                },
                "doses": None,
            },
            REF,
            "is a cycle",
        ),
        (
            {
                "prescriptions": {
                    "privacy_unit": {"via": "visit_id", "references": "visits.visit_id"},
                    "columns": {"visit_id": {"lower": 0, "upper": 9}},
                }
            },
            "tables.prescriptions.columns.visit_id.lower",
            "the key column of privacy_unit (via) cannot carry bounds or values",
        ),
        ({"visits": {"privacy_unit": KEYED_UNIT}}, "tables.visits.privacy_unit", "is reserved"),
        ({"visits": {"privacy_unit": "patient_id", "columns": {KEYED_UNIT: {}}}}, f"tables.visits.columns.{KEYED_UNIT}", "is reserved"),
    ],
)
def test_bad_key_paths_name_the_key(tables: dict[str, Any], key: str, problem: str) -> None:
    with pytest.raises(PolicyError) as e:
        policy_from_dict(_with(**tables), "/x/policy.toml")
    assert e.value.key == key, e.value
    assert problem in e.value.problem, e.value
    assert e.value.sqlstate == "F0000" and e.value.file == "/x/policy.toml"


def test_key_paths_longer_than_the_limit_are_refused() -> None:
    tables: dict[str, Any] = {"t0": {"privacy_unit": "u", "columns": {"k": {"unique": True}}}}
    for i in range(1, MAX_UNIT_PATH + 2):
        tables[f"t{i}"] = {"privacy_unit": {"via": "r", "references": f"t{i - 1}.k"}, "columns": {"k": {"unique": True}}}
    base = {"server": {"auth": "trust"}, "budget": {"epsilon": 1, "delta": 1e-6}, "users": {"a": {}}}
    ok = dict(base, tables={k: v for k, v in tables.items() if k != f"t{MAX_UNIT_PATH + 1}"})
    last = policy_from_dict(ok).table(f"t{MAX_UNIT_PATH}")
    assert last is not None and len(last.unit_path) == MAX_UNIT_PATH and last.unit_root == "u"
    with pytest.raises(PolicyError) as e:
        policy_from_dict(dict(base, tables=tables))
    assert e.value.key == f"tables.t{MAX_UNIT_PATH + 1}.privacy_unit.references"
    assert f"more than {MAX_UNIT_PATH} steps" in e.value.problem


def test_catalog_checks_the_key_columns() -> None:
    pol = policy_from_dict(BASE, "/x/policy.toml")
    missing = dict(DESCRIBED, **{"public.prescriptions": [("rx_id", "int8"), ("dose", "float8")]})
    with pytest.raises(PolicyError) as e:
        build_catalog(pol, missing)
    assert e.value.key == "tables.prescriptions.privacy_unit.via" and "'visit_id' is not in table" in e.value.problem
    mistyped = dict(DESCRIBED, **{"public.prescriptions": [("rx_id", "int8"), ("visit_id", "text"), ("dose", "float8")]})
    with pytest.raises(PolicyError) as e:
        build_catalog(pol, mistyped)
    assert e.value.key == "tables.prescriptions.privacy_unit" and "different types" in e.value.problem
