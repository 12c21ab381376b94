"""Shared fixtures for rewriter tests: a hospital-like policy and its visible schema (no data)."""

from __future__ import annotations

import pytest

from dpsql.policy import Policy, policy_from_dict
from dpsql.schema import Catalog, build_catalog

POLICY = {
    "server": {"auth": "trust"},
    "budget": {"epsilon": 10, "delta": 1e-6},
    "users": {"alice": {}},
    "tables": {
        "visits": {
            "privacy_unit": "patient_id",
            "max_groups": 2,
            "max_rows": 3,
            "columns": {
                "age": {"lower": 0, "upper": 100},
                "cost": {"lower": 0.0, "upper": 5000.0},
                "department": {"values": ["cardiology", "oncology", "orthopedics"]},
                "diagnosis": {},
                "visit_date": {},
                "department_id": {},
                "note": {},
            },
        },
        "patients": {
            "privacy_unit": "patient_id",
            "columns": {"region": {"values": ["north", "south"]}, "birth_year": {"lower": 1900, "upper": 2025}},
        },
        "departments": {"public": True},
    },
}

DESCRIBED = {
    "public.visits": [
        ("visit_id", "int8"),
        ("patient_id", "int8"),
        ("age", "int4"),
        ("cost", "float8"),
        ("department", "text"),
        ("diagnosis", "text"),
        ("visit_date", "date"),
        ("department_id", "int4"),
        ("note", "text"),
        ("secret", "text"),
    ],
    "public.patients": [("patient_id", "int8"), ("region", "text"), ("birth_year", "int4")],
    "public.departments": [("department_id", "int4"), ("name", "text"), ("floor", "int4")],
}


@pytest.fixture(scope="session")
def policy() -> Policy:
    return policy_from_dict(POLICY, "/tmp/policy.toml")


@pytest.fixture(scope="session")
def catalog(policy: Policy) -> Catalog:
    return build_catalog(policy, DESCRIBED)


# Issue 11 item 1: prescriptions belong to the patient of their visit (a key path), doses to the
# patient of their prescription's visit (two steps); visits.visit_id and prescriptions.rx_id are
# declared unique.
KEYED_POLICY = {
    **POLICY,
    "tables": {
        **POLICY["tables"],
        "visits": {**POLICY["tables"]["visits"],
                   "columns": {**POLICY["tables"]["visits"]["columns"], "visit_id": {"unique": True}}},
        "prescriptions": {
            "privacy_unit": {"via": "visit_id", "references": "visits.visit_id"},
            "max_groups": 2,
            "max_rows": 4,
            "columns": {"rx_id": {"unique": True}, "drug": {"values": ["a", "b", "c"]}, "dose": {"lower": 0, "upper": 50},
                        "route": {}},
        },
        "doses": {
            "privacy_unit": {"via": "rx_id", "references": "prescriptions.rx_id"},
            "max_rows": 5,
            "columns": {"amount": {"lower": 0, "upper": 10}},
        },
    },
}

KEYED_DESCRIBED = {
    **DESCRIBED,
    "public.prescriptions": [("rx_id", "int8"), ("visit_id", "int8"), ("drug", "text"), ("dose", "float8"), ("route", "text"),
                             ("prescriber", "text")],
    "public.doses": [("rx_id", "int8"), ("amount", "int4"), ("given_at", "timestamp")],
}


@pytest.fixture(scope="session")
def keyed_catalog() -> Catalog:
    return build_catalog(policy_from_dict(KEYED_POLICY, "/tmp/keyed-policy.toml"), KEYED_DESCRIBED)
